"""End-to-end helpers: real `enclave up` agents (TAP + compiled data plane) in lab hosts, and
traffic over their overlay addresses (ICMP echo on a raw socket, TCP with a digest, UDP echo).

    public host "plat": enclave platform serve (HTTPS API, control WebSocket, reflector, relay)
          |  198.18.0.0/16 "internet"
    +-----+------+   +-----+------+
    | NAT site A |   | NAT site B |    each site host runs `enclave up` -> TAP enclave0
    |   a1       |   |   b1       |    100.64.x.y/10 from its certificate
    +------------+   +------------+

Every socket is opened inside a host's namespace (Host.socket) and every read has a timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from enclave.agent.localapi import AgentNotRunning, call
from enclave.netlab import Host, Lab, Topology
from tests.control.helpers import ENV, REPO, Platform, enclave, stop, wait_for

API_PORT = 8443


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


# -- traffic ------------------------------------------------------------------------------------

def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(src: Host, dst_ip: str, *, count: int = 3, timeout: float = 1.0) -> int:
    """ICMP echo over a raw socket in src's namespace; the number of matching replies."""
    sock = src.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    got = 0
    try:
        sock.settimeout(timeout)
        for seq in range(1, count + 1):
            payload = os.urandom(32)
            hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            pkt = struct.pack("!BBHHH", 8, 0, _csum(hdr + payload), ident, seq) + payload
            sock.sendto(pkt, (dst_ip, 0))
            while True:
                try:
                    data, addr = sock.recvfrom(2048)
                except TimeoutError:
                    break
                ihl = (data[0] & 0x0F) * 4
                icmp = data[ihl:]
                if (addr[0] == dst_ip and len(icmp) >= 8 and icmp[0] == 0
                        and struct.unpack("!HH", icmp[4:8]) == (ident, seq)
                        and icmp[8:] == payload):
                    got += 1
                    break
    finally:
        sock.close()
    return got


def udp_exchange(a: Host, a_ip: str, b: Host, b_ip: str, *, count: int = 20,
                 timeout: float = 1.0) -> int:
    """b echoes datagrams back; the number of datagrams that came back intact."""
    srv = b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        srv.bind((b_ip, 0))
        srv.settimeout(timeout)
        cli.bind((a_ip, 0))
        cli.settimeout(timeout)
        port = srv.getsockname()[1]
        ok = 0
        for i in range(count):
            msg = i.to_bytes(4, "big") + os.urandom(200 + 50 * (i % 20))
            cli.sendto(msg, (b_ip, port))
            try:
                data, peer = srv.recvfrom(4096)
                srv.sendto(data, peer)
                back, _ = cli.recvfrom(4096)
            except TimeoutError:
                continue
            ok += back == msg
        return ok
    finally:
        srv.close()
        cli.close()


def tcp_transfer(a: Host, b: Host, b_ip: str, size: int = 4 << 20,
                 timeout: float = 10.0) -> tuple[str, str]:
    """Send `size` random bytes a -> b over TCP; (sent sha256, received sha256)."""
    srv = b.socket(socket.AF_INET, socket.SOCK_STREAM)
    cli = a.socket(socket.AF_INET, socket.SOCK_STREAM)
    data = os.urandom(size)
    got: dict[str, Any] = {}

    def serve() -> None:
        try:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(timeout)
                h = hashlib.sha256()
                n = 0
                while n < size:
                    chunk = conn.recv(1 << 16)
                    if not chunk:
                        break
                    h.update(chunk)
                    n += len(chunk)
                got["digest"] = h.hexdigest()
                got["n"] = n
        except OSError as exc:
            got["error"] = repr(exc)

    try:
        srv.bind((b_ip, 0))
        srv.listen(1)
        srv.settimeout(timeout)
        port = srv.getsockname()[1]
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        cli.settimeout(timeout)
        cli.connect((b_ip, port))
        cli.sendall(data)
        cli.shutdown(socket.SHUT_WR)
        t.join(timeout + 1)
        assert not t.is_alive(), "TCP receiver did not finish"
        assert "error" not in got, got.get("error")
        return hashlib.sha256(data).hexdigest(), str(got.get("digest"))
    finally:
        srv.close()
        cli.close()


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
    """A system platform_lab can enrol and stop: Agent here, AgentProc in tests/control."""

    def enrol(self, token: str) -> str: ...

    def down(self) -> int: ...


E = TypeVar("E", bound=Enrollee)


@contextmanager
def platform_lab_of(make: Callable[[Host, Path, Path], E], topo: Topology, tmp: Path,
                    hosts: Iterable[str], *, plat_host: str = "plat",
                    plat_env: dict[str, str] | None = None
                    ) -> Iterator[tuple[Lab, Platform, dict[str, E]]]:
    """A started lab, a platform serving on its public host `plat_host` (with `plat_env`), and
    one enrolled (not yet running) system per host name, made by make(host, state dir, log
    path); all stopped and removed on exit."""
    lab = Lab(topo).start()
    agents: dict[str, E] = {}
    plat: Platform | None = None
    try:
        ph = lab.public_host(plat_host)
        plat = Platform.init(tmp, str(ph.ip), API_PORT, runner(ph), spawner(ph),
                             listen_host="0.0.0.0")
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
