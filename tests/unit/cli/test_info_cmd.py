"""`enclave info`: report contents, JSON/table output, exit codes, side-effect-free probes."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from enclave import info, sysinfo
from tests.support.proc import REPO

CHANGELOG = """\
Changelog
=========

1.7.0 (2027-01-01)
------------------
* Updated ``libsodium`` to 1.0.21-stable.

1.6.2 (2026-01-01)
------------------
* Something else entirely.

1.6.0 (2025-09-11)
------------------
* Update ``libsodium`` to 1.0.20-stable (2025-08-27 build).

1.3.0 2018-09-26
----------------

* Update ``libsodium`` to 1.0.16.
"""


@pytest.mark.parametrize(
    ("pynacl", "expected"),
    [("1.7.0", "1.0.21"), ("1.6.2", "1.0.20"), ("1.6.0", "1.0.20"), ("1.5.0", "1.0.16"),
     ("1.2.0", None)],
)
def test_bundled_sodium_from_changelog(pynacl: str, expected: str | None) -> None:
    assert sysinfo.bundled_sodium_from_changelog(CHANGELOG, pynacl) == expected


def test_installed_libsodium_version() -> None:
    # PyNaCl 1.6.x bundles libsodium 1.0.20 (pyproject requires pynacl>=1.6).
    if sysinfo.pynacl_version().startswith("1.6."):
        assert sysinfo.libsodium_version() == "1.0.20"
    else:
        assert sysinfo.libsodium_version()[0].isdigit()


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def test_kernel_probes_leave_nothing_behind() -> None:
    before = _links()
    feats = sysinfo.kernel_features()
    assert _links() == before
    assert feats["kernel"] == os.uname().release
    tun = feats["tun"]
    if isinstance(tun, dict):
        assert tun["tap"] and tun["no_pi"]
    # UDP GSO over loopback is functional (3 datagrams out of one send) on any modern kernel
    assert feats["udp"] == {"udp_segment": True, "udp_gro": True}
    tap = feats["tap_offload"]
    if os.geteuid() == 0 and os.path.exists(sysinfo.TUN_PATH):
        assert tap == {"tso": True, "uso": tap["uso"]} and tap["tso"] is True
    else:
        assert isinstance(tap, str) and tap.startswith("not probed")


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return info.gather()  # real probes; py-cpuinfo once (~1 s)


def test_report_here(report: dict[str, Any]) -> None:
    for key in ("version", "libsodium", "fastpath", "cipher", "cpu_flags", "kernel_features",
                "python", "cpu_model", "cipher_reason"):
        assert key in report
    assert report["fastpath"] is True and report["fastpath_error"] is None
    assert report["libsodium"] == sysinfo.libsodium_version()
    sod = report["sodium_flags"]
    aes_ok = sod["aesni"] and sod["pclmul"] and sod["ssse3"]
    if os.environ.get("ENCLAVE_CIPHER") is None:
        assert report["cipher"] == ("aes256gcm" if aes_ok else "chacha20poly1305")
    assert set(report["cpu_flags"]) >= {"aes", "pclmulqdq", "ssse3"}
    json.dumps(report)  # serialisable


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="enclave")
    info.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_json_and_table_output(report: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    # `report` warmed py-cpuinfo's cache; the command re-probes everything else for real
    assert _run(["info", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("version", "libsodium", "fastpath", "cipher", "cpu_flags", "sodium_flags"):
        assert out[key] == report[key]
    assert _run(["info"]) == 0
    table = capsys.readouterr().out
    assert "libsodium" in table and str(report["cipher"]) in table and "loaded" in table


def test_cipher_override_in_report(report: dict[str, Any],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_CIPHER", "chacha20poly1305")
    rep = info.gather("aes256gcm")
    assert rep["cipher"] == "chacha20poly1305" and "ENCLAVE_CIPHER" in rep["cipher_reason"]
    monkeypatch.setenv("ENCLAVE_CIPHER", "bogus")
    rep = info.gather()
    assert rep["cipher"] is None and "unknown cipher 'bogus'" in rep["cipher_reason"]


def test_missing_extension_is_reported_and_fails(tmp_path: Path) -> None:
    # A real install of the package without the compiled extension: copy only the .py files.
    dst = tmp_path / "enclave"
    shutil.copytree(REPO / "enclave", dst, ignore=shutil.ignore_patterns(
        "*.so", "*.c", "*.pyx", "*.pxi", "*.pxd", "__pycache__"))
    assert not list(dst.glob("_fastpath*.so"))
    # An editable install (`pip install -e .`) adds a meta-path finder that would still find the
    # extension in the source tree; drop it so only the copy on PYTHONPATH is importable.
    script = (
        "import argparse, sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        "from enclave import info\n"
        "p = argparse.ArgumentParser(); info.register(p.add_subparsers())\n"
        "a = p.parse_args(sys.argv[1:]); raise SystemExit(a.func(a))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script, "info", "--json"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["fastpath"] is False and "_fastpath" in out["fastpath_error"]
    assert out["cipher"] is None
    assert "fast path not loaded" in proc.stderr
