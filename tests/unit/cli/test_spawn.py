"""Children started with enclave.spawn run the installed package, never a checkout's sources
in their working directory (the `enclave bench` from a checkout's root failure)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import enclave
from enclave.spawn import enclave_argv, module_argv

DECOY = 'raise SystemExit("imported the enclave package from the working directory")\n'


def _decoy_checkout(root: Path) -> Path:
    """A directory whose `enclave` package is not the installed one (like an unbuilt checkout)."""
    (root / "enclave" / "bench").mkdir(parents=True)
    (root / "enclave" / "__init__.py").write_text(DECOY)
    (root / "enclave" / "__main__.py").write_text(DECOY)
    (root / "enclave" / "bench" / "__init__.py").write_text(DECOY)
    return root


def test_enclave_child_ignores_the_working_directory(tmp_path: Path) -> None:
    cwd = _decoy_checkout(tmp_path)
    res = subprocess.run(enclave_argv("--version"), cwd=cwd, capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"enclave {enclave.__version__}"


def test_module_child_ignores_the_working_directory(tmp_path: Path) -> None:
    cwd = _decoy_checkout(tmp_path)
    res = subprocess.run(module_argv("enclave.bench.udpgen", "--help"), cwd=cwd,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert "udpgen" in res.stdout
