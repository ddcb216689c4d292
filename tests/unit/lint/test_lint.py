"""The tree stays ruff- and mypy-clean: run both as part of the suite so CI enforces them."""

from __future__ import annotations

import subprocess
import sys

from tests.support.proc import REPO

ROOT = REPO


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_clean() -> None:
    res = _run([sys.executable, "-m", "ruff", "check", "enclave", "tests", "bench", "setup.py"])
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_clean() -> None:
    res = _run([sys.executable, "-m", "mypy"])
    assert res.returncode == 0, res.stdout + res.stderr
