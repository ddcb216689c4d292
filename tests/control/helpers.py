"""Real platform and agent processes for the control-plane tests (loopback or netlab hosts)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    return [sys.executable, "-m", "enclave", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def stop(proc: subprocess.Popen[Any]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return int(proc.returncode)


@dataclass
class Platform:
    data: Path
    url: str
    listen: str
    run: Runner
    popen: Spawner
    log_path: Path
    proc: subprocess.Popen[Any] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    admin_token: str = ""  # the admin API token `platform init` printed (its last line)

    @classmethod
    def init(cls, tmp: Path, host: str, port: int, run: Runner = local_run,
             popen: Spawner = local_popen, listen_host: str | None = None) -> Platform:
        data = tmp / "platform"
        url = f"https://{host}:{port}"
        res = run(enclave("platform", "init", "--data", str(data), "--url", url, "--org", "acme"))
        assert res.returncode == 0, res.stderr
        return cls(data, url, f"{listen_host or host}:{port}", run, popen, tmp / "platform.log",
                   admin_token=res.stdout.strip().splitlines()[-1])

    @classmethod
    def loopback(cls, tmp: Path, **env: str) -> Platform:
        """Initialised and serving on 127.0.0.1 (free API and discovery ports); ``env`` adds
        to the server's environment (e.g. ENCLAVE_PLATFORM_RELAY="off"). The caller stops it."""
        plat = cls.init(tmp, "127.0.0.1", free_port())
        plat.extra_env["ENCLAVE_DISCOVERY_PORTS"] = f"{free_port()},{free_port()}"
        plat.extra_env.update(env)
        try:
            plat.start()
        except BaseException:
            plat.stop()
            raise
        return plat

    def start(self) -> None:
        log = open(self.log_path, "ab")
        cmd = enclave("--log-level", "debug", "platform", "serve", "--data", str(self.data),
                      "--listen", self.listen)
        self.proc = self.popen(["env", *(f"{k}={v}" for k, v in self.extra_env.items()), *cmd],
                               stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: "serving on" in self.log() or self.proc.poll() is not None,
                 timeout=20, what="platform start")
        assert self.proc.poll() is None, self.log()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(enclave("platform", *args, "--data", str(self.data)))

    def token(self, *extra: str) -> str:
        res = self.run(enclave("platform", "keys", "create", "--data", str(self.data),
                               "--unlimited", *extra))
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()


@dataclass
class AgentProc:
    state: Path
    run: Runner
    popen: Spawner
    log_path: Path
    port: int
    name: str = ""
    proc: subprocess.Popen[Any] | None = None

    @classmethod
    def local(cls, tmp: Path, role: str) -> AgentProc:
        """An agent on this host: state in tmp/ROLE, log in tmp/ROLE.log, a free UDP port."""
        return cls(tmp / role, local_run, local_popen, tmp / f"{role}.log", free_port())

    def enrol(self, token: str) -> str:
        res = self.run(enclave("enrol", token, "--state", str(self.state)))
        assert res.returncode == 0, res.stderr
        self.name = res.stdout.strip()
        return self.name

    def up(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = self.popen(enclave("--log-level", "debug", "up", "--state", str(self.state),
                                       "--port", str(self.port), "--no-tap"),
                               stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: self._status_ok(), timeout=15, what=f"agent {self.name} local API")

    def _status_ok(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log()
        return self.cmd("status", "--json").returncode == 0

    def down(self) -> int:
        return stop(self.proc) if self.proc is not None else 0

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(enclave(*args, "--state", str(self.state)))

    def intent(self, op: str, *peer: str) -> str:
        res = self.cmd("intent", op, *peer, "--json")
        assert res.returncode == 0, res.stderr
        return res.stdout

    def status(self) -> dict[str, Any]:
        res = self.cmd("status", "--json")
        assert res.returncode == 0, res.stderr
        return dict(json.loads(res.stdout))

    def peers(self) -> list[dict[str, Any]]:
        res = self.cmd("peers", "--json")
        assert res.returncode == 0, res.stderr
        return list(json.loads(res.stdout))

    def withdrawn_at(self, peer: str) -> float:
        """Agent wall-clock time of the latest withdrawal of ``peer``."""
        return max(w["at"] for w in self.status()["withdrawals"] if w["peer"] == peer)

    def introduced_at(self, peer: str) -> float:
        return float(next(p["introduced_at"] for p in self.peers() if p["name"] == peer))

    def peer_names(self) -> set[str]:
        return {p["name"] for p in self.peers()}
