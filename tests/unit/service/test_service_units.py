"""`enclave service unit|install`: the units pass the real `systemd-analyze verify`, carry the
hardening the issue asks for, and `install --unit-dir` writes them; the credential the unit loads
is the one the key store reads."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from enclave.agent.state import StateDir
from enclave.cert.errors import KeyStoreError
from enclave.cert.keys import generate_private_key, public_key_raw
from enclave.platform.paths import PlatformPaths
from enclave.service.install import ServiceError, install_unit, installed_enclave
from enclave.service.units import AGENT, PLATFORM, ROLES, render_unit, spec_for
from enclave.spawn import enclave_argv


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(enclave_argv("service", *args), capture_output=True, text=True,
                          timeout=60, cwd=cwd, check=False)


def _directives(text: str) -> dict[str, dict[str, list[str]]]:
    """[Section] -> key -> values, as systemd reads a unit (comments and blanks skipped)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("credential", [True, False])
def test_printed_unit_passes_systemd_analyze_verify(tmp_path: Path, role: str,
                                                    credential: bool) -> None:
    args = ["unit", role] + ([] if credential else ["--no-credential"])
    res = _cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    unit = tmp_path / f"enclave-{role}.service"
    unit.write_text(res.stdout)
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60, check=False)
    # verify exits 0 on unknown keys and bad values too, warning on stderr: demand silence.
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    exec_start = _directives(res.stdout)["Service"]["ExecStart"][0].split()
    assert Path(exec_start[0]).is_absolute() and Path(exec_start[0]).is_file()


def test_agent_unit_directives() -> None:
    text = render_unit(AGENT, installed_enclave(), credential=AGENT.credential_path)
    service = _directives(text)["Service"]
    assert service["Type"] == ["notify"]  # the agent sends READY=1 itself
    assert service["Restart"] == ["on-failure"]
    assert {"CAP_NET_ADMIN", "CAP_NET_RAW"} <= set(service["CapabilityBoundingSet"][0].split())
    assert "CAP_SYS_ADMIN" not in service["CapabilityBoundingSet"][0]
    assert service["ProtectSystem"] == ["strict"]
    assert service["StateDirectory"] == ["enclave"]  # /var/lib/enclave, the default --state
    assert service["RuntimeDirectory"] == ["enclave"]  # /run/enclave, the local API socket
    assert service["LoadCredentialEncrypted"] == [
        "enclave-key-passphrase:/etc/credstore.encrypted/enclave-key-passphrase"]
    assert service["DeviceAllow"] == ["/dev/net/tun rw"]
    assert "AF_NETLINK" in service["RestrictAddressFamilies"][0].split()
    for key in ("PrivateTmp", "NoNewPrivileges"):
        assert service[key] == ["yes"], key
    assert service["ProtectHome"] in (["yes"], ["read-only"])
    assert "ProtectKernelTunables" not in service  # a gateway writes net.ipv4.ip_forward
    assert service["ExecStart"][0].split()[1:] == ["up", "--state", "/var/lib/enclave"]
    assert _directives(text)["Install"]["WantedBy"] == ["multi-user.target"]


def test_platform_unit_directives() -> None:
    text = render_unit(PLATFORM, installed_enclave(), credential=None)
    service = _directives(text)["Service"]
    assert service["ExecStart"][0].split()[1:] == [
        "platform", "serve", "--data", "/var/lib/enclave-platform"]
    assert service["StateDirectory"] == ["enclave-platform"]
    assert service["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert service["ProtectSystem"] == ["strict"] and service["PrivateDevices"] == ["yes"]
    assert "LoadCredentialEncrypted" not in service  # --no-credential: keys.kek is used


def test_enclave_installed_under_a_home_directory_stays_reachable() -> None:
    home = _directives(render_unit(AGENT, Path("/root/.venv/bin/enclave"), credential=None))
    assert home["Service"]["ProtectHome"] == ["read-only"]
    opt = _directives(render_unit(AGENT, Path("/opt/enclave/bin/enclave"), credential=None))
    assert opt["Service"]["ProtectHome"] == ["yes"]


def test_render_refuses_relative_executable_and_unknown_role() -> None:
    with pytest.raises(ValueError, match="absolute"):
        render_unit(AGENT, Path("enclave"), credential=None)
    with pytest.raises(ValueError, match="unknown service"):
        spec_for("relay")


def test_install_writes_the_printed_unit(tmp_path: Path) -> None:
    cred = tmp_path / "enclave-key-passphrase.cred"
    cred.write_bytes(b"encrypted blob")
    units = tmp_path / "units"
    res = _cli("install", "agent", "--unit-dir", str(units), "--credential", str(cred),
               cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    written = units / "enclave-agent.service"
    printed = _cli("unit", "agent", "--credential", str(cred), cwd=tmp_path).stdout
    assert written.read_text() == printed
    assert f"LoadCredentialEncrypted=enclave-key-passphrase:{cred}" in printed
    assert written.stat().st_mode & 0o777 == 0o644
    assert f"wrote {written}" in res.stdout


def test_exec_must_be_an_absolute_executable(tmp_path: Path) -> None:
    script = tmp_path / "enclave"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    for bad in (str(script), "enclave", str(tmp_path / "absent")):
        res = _cli("unit", "agent", "--exec", bad, cwd=tmp_path)
        assert res.returncode == 1 and "not an executable file" in res.stderr, bad
    script.chmod(0o755)
    res = _cli("unit", "agent", "--exec", str(script), cwd=tmp_path)
    assert res.returncode == 0 and f"ExecStart={script} up" in res.stdout


def test_install_refuses_a_missing_credential_with_the_remedy(tmp_path: Path) -> None:
    res = _cli("install", "platform", "--unit-dir", str(tmp_path), "--credential",
               str(tmp_path / "absent"), cwd=tmp_path)
    assert res.returncode == 1
    assert "systemd-creds encrypt --name=enclave-platform-key-passphrase" in res.stderr
    assert "--no-credential" in res.stderr
    assert not (tmp_path / "enclave-platform.service").exists()


def test_install_without_systemd_says_so_when_asked_to_enable(tmp_path: Path) -> None:
    text = render_unit(PLATFORM, installed_enclave(), credential=None)
    result = install_unit(PLATFORM, text, tmp_path, enable=False, now=False, systemd=False)
    assert result.path.read_text() == text and result.ran == []
    with pytest.raises(ServiceError, match="systemd is not running"):
        install_unit(PLATFORM, text, tmp_path, enable=True, now=False, systemd=False)


@pytest.mark.parametrize("role", ROLES)
def test_the_unit_credential_is_what_the_key_store_reads(tmp_path: Path, role: str) -> None:
    """The credential ID in LoadCredentialEncrypted= is the file name the keys are read from
    under $CREDENTIALS_DIRECTORY (a real file, as systemd lays it out)."""
    spec = spec_for(role)
    text = render_unit(spec, installed_enclave(), credential=spec.credential_path)
    cred_id = _directives(text)["Service"]["LoadCredentialEncrypted"][0].split(":")[0]
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / cred_id).write_bytes(b"passphrase from systemd\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    root = tmp_path / "state"
    root.mkdir()
    store = StateDir(root).keystore() if role == "agent" else PlatformPaths(root).ca_keystore()
    key = generate_private_key()
    store.save(key, environ=env)
    assert not store.kek_path.exists()  # the passphrase did not come from a kek file
    assert public_key_raw(store.load(environ=env)) == public_key_raw(key)
    (creds / cred_id).write_bytes(b"another passphrase")
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        store.load(environ=env)
    (creds / cred_id).write_bytes(b"\n")
    with pytest.raises(KeyStoreError, match="is empty"):
        store.load(environ=env)
