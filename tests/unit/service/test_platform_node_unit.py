"""`enclave service unit|install platform@[NAME]`: the template unit for several platform nodes
(one instance per node, its settings in /etc/enclave/platform-NAME.env) passes the real
`systemd-analyze verify`, as a template and as an instance, and install names the instance."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from enclave.service.install import install_unit, installed_enclave
from enclave.service.units import PLATFORM, PLATFORM_NODE, parse_role, render_unit
from enclave.spawn import enclave_argv


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(enclave_argv("service", *args), capture_output=True, text=True,
                          timeout=60, cwd=cwd, check=False)


def _verify(unit: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True,
                          timeout=60, cwd=cwd, check=False)


def _service(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_template_and_instance_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    res = _cli("unit", "platform@", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (tmp_path / "enclave-platform@.service").write_text(res.stdout)
    for unit in ("enclave-platform@.service", "./enclave-platform@cp1.service"):
        verify = _verify(unit, tmp_path)  # the instance is loaded from the template beside it
        # verify exits 0 on unknown keys and bad values too, warning on stderr: demand silence
        assert verify.returncode == 0 and verify.stderr == "", (unit, verify.stderr)
    # a broken template is not silent: the check above would see it
    (tmp_path / "enclave-platform@.service").write_text(res.stdout.replace(
        "[Service]\n", "[Service]\nBogus=1\n"))
    assert "Bogus" in _verify("./enclave-platform@cp1.service", tmp_path).stderr


def test_instance_has_its_own_data_listen_address_and_settings() -> None:
    service = _service(render_unit(PLATFORM_NODE, installed_enclave(),
                                   credential=PLATFORM_NODE.credential_path))
    assert service["ExecStart"][0].split()[1:] == [
        "platform", "serve", "--data", "/var/lib/enclave-platform/%i",
        "--listen", "${ENCLAVE_PLATFORM_LISTEN}"]
    assert service["StateDirectory"] == ["enclave-platform/%i"]
    assert service["EnvironmentFile"] == ["/etc/enclave/platform-%i.env"]
    # the same hardening and key-encryption key as the one-node platform unit
    single = _service(render_unit(PLATFORM, installed_enclave(),
                                  credential=PLATFORM.credential_path))
    for key in ("CapabilityBoundingSet", "ProtectSystem", "PrivateDevices",
                "SystemCallFilter", "LoadCredentialEncrypted", "RestrictAddressFamilies"):
        assert service[key] == single[key], key


def test_role_names_and_instances() -> None:
    assert parse_role("platform@") == (PLATFORM_NODE, "")
    assert parse_role("platform@cp-1.b") == (PLATFORM_NODE, "cp-1.b")
    assert parse_role("platform") == (PLATFORM, "")
    for bad in ("platform@a/b", "platform@" + "x" * 65, "agent@x", "relay@"):
        try:
            parse_role(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")


def test_install_writes_the_template_and_enables_the_instance(tmp_path: Path) -> None:
    res = _cli("install", "platform@cp2", "--unit-dir", str(tmp_path), "--no-credential",
               cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    written = tmp_path / "enclave-platform@.service"
    assert written.read_text() == _cli("unit", "platform@cp2", "--no-credential",
                                       cwd=tmp_path).stdout
    assert "systemctl enable --now enclave-platform@cp2.service" in res.stdout
    assert "/etc/enclave/platform-cp2.env" in res.stdout
    ran: list[list[str]] = []

    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        ran.append(list(argv))
        return subprocess.CompletedProcess(list(argv), 0, "", "")

    install_unit(PLATFORM_NODE, written.read_text(), tmp_path, enable=True, now=True,
                 systemd=True, run=run, instance="cp2")
    assert ran[-1] == ["systemctl", "enable", "--now", "enclave-platform@cp2.service"]
    refused = _cli("install", "platform@", "--unit-dir", str(tmp_path), "--no-credential",
                   "--enable", cwd=tmp_path)
    assert refused.returncode == 1 and "name the node" in refused.stderr
