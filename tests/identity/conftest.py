"""A real `enclave platform serve` subprocess on 127.0.0.1 (free port) for platform tests."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the real `enclave` command (python -m enclave ...)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "enclave", *args],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PlatformProc:
    data: Path
    url: str
    port: int
    admin_token: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env={"ENCLAVE_PLATFORM_DATA": str(self.data)})

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data / "platform.db", timeout=10, isolation_level=None)

    def count(self, sql: str, *params: object) -> int:
        with self.db() as db:
            return int(db.execute(sql, params).fetchone()[0])

    def new_token(self, *args: str) -> str:
        res = self.cli("platform", "keys", "create", *args)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return int(self.proc.returncode)


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"platform exited early:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as raw, \
                    ctx.wrap_socket(raw):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"platform did not start:\n{log.read_text()}")


def start_platform(tmp: Path, *, org: str = "acme") -> PlatformProc:
    data = tmp / "platform"
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    res = run_cli("platform", "init", "--data", str(data), "--url", url, "--org", org)
    assert res.returncode == 0, res.stderr
    admin_token = res.stdout.strip().splitlines()[-1]
    assert admin_token.startswith("enclave-admin-")
    log_path = tmp / "platform.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "enclave", "--log-level", "debug", "platform", "serve",
         "--data", str(data), "--listen", f"127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    log.close()
    try:
        _wait_ready(port, proc, log_path)
    except BaseException:
        proc.kill()
        proc.wait(timeout=5)
        raise
    return PlatformProc(data, url, port, admin_token, proc, log_path)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProc]:
    p = start_platform(tmp_path_factory.mktemp("plat"))
    try:
        yield p
    finally:
        p.stop()
