"""A real agent process on this host (`enclave up --no-tap`), driven through its CLI.

    agent = AgentProc.local(tmp, "a"); agent.enrol(plat.token()); agent.up()
    agent.status() / agent.peers() / agent.intent("add", peer)   `enclave ... --json`
    agent.down()                                                  SIGTERM; the exit status
    with loopback_agents(tmp, ["a", "b"]) as (plat, agents): ...  a loopback platform and
                                                                  enrolled, running agents
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.platform import Platform
from tests.support.proc import Runner, Spawner, enclave, free_port, local_popen, local_run, stop
from tests.support.wait import wait_for


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
        # --no-portmap: an agent on this host would ask the host's own gateway for a mapping
        self.proc = self.popen(enclave("--log-level", "debug", "up", "--state", str(self.state),
                                       "--port", str(self.port), "--no-tap", "--no-portmap"),
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


@contextmanager
def loopback_agents(tmp: Path, roles: Iterable[str], *, start: bool = True,
                    db: str | None = None, **env: str
                    ) -> Iterator[tuple[Platform, dict[str, AgentProc]]]:
    """A platform on loopback (Platform.loopback with ``db`` and ``env``) and one AgentProc
    per role, enrolled with one token and, with ``start``, running (else the test starts
    those it wants); every agent and the platform are stopped when the block ends."""
    with Platform.loopback(tmp, db=db, **env) as plat:
        agents: dict[str, AgentProc] = {}
        try:
            token = plat.token()
            for role in roles:
                agents[role] = AgentProc.local(tmp, role)
                agents[role].enrol(token)
            if start:
                for a in agents.values():
                    a.up()
            yield plat, agents
        finally:
            for a in agents.values():
                a.down()
