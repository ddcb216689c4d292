"""Running the real `enclave` command for tests: here, or through a lab host's runner.

    local_run(enclave("platform", "init", ...))   python -P -m enclave ... (30 s timeout)
    run_cli("enrol", token, env={...})             the same, extra environment
    local_popen(argv, stdout=log)                  a long-running process (own session)
    stop(proc)                                     SIGTERM, then SIGKILL after 10 s

Every process runs from the repository with it on PYTHONPATH (``ENV``), so test shims under
tests.support import; `enclave` itself is started by enclave.spawn.enclave_argv (`-P`: the
working directory is not on sys.path), which with the suite's editable install is the checkout.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from enclave.localport import free_port as free_port  # the tests' import of it
from enclave.spawn import enclave_argv

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
Runner = Callable[..., subprocess.CompletedProcess[str]]  # argv -> completed (maybe in a netns)
Spawner = Callable[..., subprocess.Popen[Any]]


def local_run(argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, env=ENV,
                          cwd=REPO, **kw)


def local_popen(argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
    return subprocess.Popen(list(argv), env=ENV, cwd=REPO, start_new_session=True, **kw)


def enclave(*args: str) -> list[str]:
    return enclave_argv(*args)


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the real `enclave` command (python -P -m enclave ...) with ``env`` added."""
    return subprocess.run(enclave(*args), capture_output=True, text=True, timeout=timeout,
                          env={**ENV, **(env or {})}, cwd=REPO)


def stop(proc: subprocess.Popen[Any]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return int(proc.returncode)
