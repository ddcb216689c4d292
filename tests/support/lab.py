"""Lab helpers: whether a netlab can run here, and real `enclave up` agents (TAP + compiled data
plane) in lab hosts with a platform on a public host (traffic over them: tests.support.traffic).

    public host "plat": enclave platform serve (HTTPS API, control WebSocket, reflector, relay)
          |  198.18.0.0/16 "internet"
    +-----+------+   +-----+------+
    | NAT site A |   | NAT site B |    each site host runs `enclave up` -> TAP enclave0
    |   a1       |   |   b1       |    100.64.x.y/10 from its certificate
    +------------+   +------------+
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from enclave.agent.localapi import AgentNotRunning, call
from enclave.netlab import Host, Lab, Topology
from tests.support.platform import Platform
from tests.support.proc import ENV, REPO, enclave, stop
from tests.support.wait import wait_for

API_PORT = 8443
LabFactory = Callable[..., Lab]  # the lab_factory fixture (tests/netlab/conftest.py)


def netlab_unavailable() -> str | None:
    """Why a netlab cannot run here (not root, no iproute2 / nft, no netns), or None."""
    if os.geteuid() != 0:
        return "netlab tests need root (network namespaces)"
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            return f"netlab tests need {tool!r} (iproute2 / nftables)"
    probe = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False
    )
    if probe.returncode != 0:
        return f"`ip netns` unavailable: {probe.stderr.strip()}"
    return None


def runner(host: Host) -> Any:
    def run(argv: list[str], **kw: Any) -> Any:
        return host.run(argv, env=ENV, cwd=REPO, **kw)

    return run


def spawner(host: Host) -> Any:
    def popen(argv: list[str], **kw: Any) -> Any:
        return host.popen(argv, env=ENV, cwd=REPO, **kw)

    return popen


@dataclass
class Agent:
    """One enrolled system on a lab host and (while up) its `enclave up` process."""

    host: Host
    state: Path
    log_path: Path
    name: str = ""
    overlay_ip: str = ""
    proc: subprocess.Popen[Any] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.host.run(enclave(*args, "--state", str(self.state)),
                             env={**ENV, **self.env}, cwd=REPO, timeout=timeout)

    def enrol(self, token: str) -> str:
        res = self.host.run(enclave("enrol", token, "--state", str(self.state)), env=ENV,
                            cwd=REPO)
        assert res.returncode == 0, res.stderr
        self.name = res.stdout.strip()
        return self.name

    def up(self, *extra: str, env: dict[str, str] | None = None) -> None:
        self.start(*extra, env=env)
        self.wait_up()

    def start(self, *extra: str, env: dict[str, str] | None = None) -> None:
        self.env = dict(env or {})
        log = open(self.log_path, "ab")
        argv = ["env", *(f"{k}={v}" for k, v in self.env.items()),
                *enclave("--log-level", "debug", "up", "--state", str(self.state), *extra)]
        self.proc = self.host.popen(argv, env=ENV, cwd=REPO, stdout=log,
                                    stderr=subprocess.STDOUT)
        log.close()

    def wait_up(self) -> None:
        st = wait_for(self._status, timeout=20, what=f"agent {self.name} local API")
        self.overlay_ip = st["overlay_ip"]

    def api(self, cmd: str) -> Any:
        """Ask the running agent over its Unix socket (what `enclave status|peers` do), without
        a CLI process per poll."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent {self.name} exited {self.proc.returncode}:\n"
                                 + self.log()[-4000:])
        return call(self.state, cmd, timeout=5)

    def _status(self) -> dict[str, Any] | None:
        try:
            return dict(self.api("status"))
        except AgentNotRunning:
            return None

    def status(self) -> dict[str, Any]:
        st = self._status()
        assert st is not None
        return st

    def down(self) -> int:
        if self.proc is None:
            return 0
        rc = stop(self.proc)
        self.proc = None
        return rc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def intent(self, op: str, peer: str, *more: str) -> None:
        """`enclave intent <op> PEER [PEER ...]` (one CLI process for several peers)."""
        res = self.run("intent", op, peer, *more, timeout=60)
        assert res.returncode == 0, res.stderr

    def peers(self) -> list[dict[str, Any]]:
        return list(self.api("peers"))

    def peers_cli(self) -> list[dict[str, Any]]:
        res = self.run("peers", "--json")
        assert res.returncode == 0, res.stderr
        return list(json.loads(res.stdout))

    def peer(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.peers() if p["name"] == name), None)

    def connected(self, name: str) -> dict[str, Any] | None:
        p = self.peer(name)
        return p if p is not None and p["state"] == "connected" else None

    def has_link(self, ifname: str = "enclave0") -> bool:
        return self.host.run(["ip", "link", "show", ifname]).returncode == 0


def up_pair(a: Agent, b: Agent, *extra: str, env: dict[str, str] | None = None,
            extra_b: tuple[str, ...] = ()) -> None:
    """Start both agents at once (process start-up dominates), then wait for both."""
    a.start(*extra, env=env)
    b.start(*extra, *extra_b, env=env)
    a.wait_up()
    b.wait_up()


def intents_both_ways(a: Agent, b: Agent, op: str = "add") -> None:
    """`enclave intent <op>` on both sides, concurrently."""
    t = threading.Thread(target=a.intent, args=(op, b.name))
    t.start()
    try:
        b.intent(op, a.name)
    finally:
        t.join(40)


def parallel(fn: Any, items: Iterable[Any], workers: int = 8) -> list[Any]:
    """fn over items in threads (agent processes and CLI calls: start-up dominates)."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def start_all(agents: Iterable[Agent], *extra: str, env: dict[str, str] | None = None) -> None:
    """`enclave up` for every agent at once, then wait until each answers on its local API."""
    agents = list(agents)
    for a in agents:
        a.start(*extra, env=env)
    for a in agents:
        a.wait_up()


class Enrollee(Protocol):
    """A system platform_lab can enrol and stop: Agent here, AgentProc (tests.support.agent)."""

    def enrol(self, token: str) -> str: ...

    def down(self) -> int: ...


E = TypeVar("E", bound=Enrollee)


def url_host(lab: Lab, family: str, plat_host: str = "plat") -> str:
    """The platform host's address as a URL host: "198.18.0.11" ("v4") or "[2001:db8::11]"
    ("v6")."""
    host = lab.public_host(plat_host)
    if family == "v6":
        assert host.ip6 is not None, "the lab has no IPv6 internet"
        return f"[{host.ip6}]"
    return str(host.ip)


@contextmanager
def platform_lab_of(make: Callable[[Host, Path, Path], E], topo: Topology, tmp: Path,
                    hosts: Iterable[str], *, plat_host: str = "plat",
                    plat_env: dict[str, str] | None = None, urls: Sequence[str] = ("v4",),
                    listen_host: str = "0.0.0.0"
                    ) -> Iterator[tuple[Lab, Platform, dict[str, E]]]:
    """A started lab, a platform serving on its public host `plat_host` (on `listen_host`,
    with `plat_env`), and one enrolled (not yet running) system per host name, made by
    make(host, state dir, log path); all stopped and removed on exit.

    ``urls``: the platform's URLs in order, "v4" (https://198.18.0.11:8443) and/or "v6"
    (https://[2001:db8::11]:8443); the first is the one `platform init` gets, the rest are
    added with `enclave platform urls add` before the enrolment token is made, so the
    systems hold them all."""
    lab = Lab(topo).start()
    agents: dict[str, E] = {}
    plat: Platform | None = None
    try:
        ph = lab.public_host(plat_host)
        plat = Platform.init(tmp, url_host(lab, urls[0], plat_host), API_PORT, runner(ph),
                             spawner(ph), listen_host=listen_host)
        for extra in urls[1:]:
            res = plat.cli("urls", "add", f"https://{url_host(lab, extra, plat_host)}:{API_PORT}")
            assert res.returncode == 0, res.stderr
        plat.extra_env.update(plat_env or {})
        plat.start()
        token = plat.token()
        for name in hosts:
            agents[name] = make(lab.host(name), tmp / name, tmp / f"{name}.log")
        parallel(lambda a: a.enrol(token), agents.values())
        yield lab, plat, agents
    finally:
        parallel(lambda a: a.down(), agents.values(), workers=16)
        if plat is not None:
            plat.stop()
        lab.close()


def platform_lab(topo: Topology, tmp: Path, hosts: Iterable[str], *, plat_host: str = "plat",
                 plat_env: dict[str, str] | None = None
                 ) -> AbstractContextManager[tuple[Lab, Platform, dict[str, Agent]]]:
    """platform_lab_of with `enclave up` Agents (TAP + data plane)."""
    return platform_lab_of(Agent, topo, tmp, hosts, plat_host=plat_host, plat_env=plat_env)
