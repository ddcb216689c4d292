"""Gateways, the product end to end: a real platform process and real `enclave up` agents.

    public host "plat": enclave platform serve
          |  198.18.0.0/16 "internet"
    +-----+------------------+      +------------------------------------------------------+
    | site c (port-restr. NAT)|      | site g (full-cone NAT)   LAN 198.19.2.0/24          |
    |  c1 198.19.1.11         |      |  g1 198.19.2.11  enclave up (gateway)               |
    |  enclave up, tag "ops"  |<====>|  g2 198.19.2.12  enclave up (gateway)               |
    |  route 198.19.2.0/28    | UDP  |  g3 198.19.2.13  plain host, no agent: echo servers |
    |   via the active gw     |      +------------------------------------------------------+
    +-------------------------+

    enclave platform systems gateway g1|g2 --routes 198.19.2.0/24 --nat
    enclave platform policy add --name ops-g1|ops-g2 --from tag:ops --gateway g1|g2 \\
        --routes 198.19.2.0/28 --acl tcp:5201,udp:5311,icmp

The gateways' LAN is behind a NAT, so the client can reach g3 only through the overlay; the
gateways masquerade, so g3 sees the serving gateway's LAN address (which tells the gateways
apart). The client picks one gateway as active (A), the other is the standby (B). Shown: ping,
TCP and UDP to g3; traffic outside the ACL, outside the grant and outside the gateway's routes
dropped and counted (`enclave status --json` on A); stopping A's `enclave up` moves traffic to B
within 5 s (the spec: measured from the SIGTERM to the first echo through B); A restarted is the
standby (no flapping back), and B hung (SIGSTOP: no withdrawal from the platform, only the
client's liveness probes notice) moves traffic back to A within 5 s as well.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from enclave.netlab import Host, Lab, NatType, Site, Topology
from tests.support.lab import Agent, runner, spawner
from tests.support.peer_paths import connected_on
from tests.support.platform import Platform
from tests.support.traffic import ping, read_digest
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root, pytest.mark.timeout(150)]
API_PORT = 8443
SERVED = "198.19.2.0/24"
GRANTED = "198.19.2.0/28"
LAN_HOST = "198.19.2.13"
TCP_OK, TCP_DENIED, UDP_OK, UDP_DENIED = 5201, 5202, 5311, 5312
FAILOVER_SPEC_S = 5.0


@dataclass
class World:
    lab: Lab
    plat: Platform
    client: Agent
    gateways: list[Agent]
    lan: Host
    active: Agent | None = None
    standby: Agent | None = None


def _gw_status(a: Agent) -> dict[str, Any]:
    st = a.status()["gateway"]
    assert st is not None, "agent has no gateway state (no TAP?)"
    return dict(st)


def _counters(a: Agent) -> dict[str, int]:
    """Gateway filter counters summed over peers, as `enclave status --json` reports them."""
    res = a.run("status", "--json")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)["gateway"]["counters"]
    assert "error" not in got, got
    total: dict[str, int] = {}
    for values in got.values():
        for k, v in values.items():
            total[k] = total.get(k, 0) + int(v)
    return total


def _lan_ip(a: Agent) -> str:
    return str(a.host.ip)


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    topo = Topology(sites=[Site("c", nat=NatType.PORT_RESTRICTED, hosts=1),
                           Site("g", nat=NatType.FULL_CONE, hosts=3)],
                    public_hosts=["plat"])
    tmp = tmp_path_factory.mktemp("gwe2e")
    lab = Lab(topo).start()
    agents: list[Agent] = []
    plat: Platform | None = None
    try:
        ph = lab.public_host("plat")
        plat = Platform.init(tmp, str(ph.ip), API_PORT, runner(ph), spawner(ph),
                             listen_host="0.0.0.0")
        plat.start()
        ops_token, token = plat.token("--tags", "ops"), plat.token()
        client = Agent(lab.host("c1"), tmp / "c1", tmp / "c1.log")
        gws = [Agent(lab.host(h), tmp / h, tmp / f"{h}.log") for h in ("g1", "g2")]
        agents = [client, *gws]
        enrolments = [threading.Thread(target=a.enrol, args=(ops_token if a is client else token,))
                      for a in agents]
        for t in enrolments:
            t.start()
        for t in enrolments:
            t.join(60)
        assert all(a.name for a in agents), "enrolment failed"
        for g in gws:
            res = plat.cli("systems", "gateway", g.name, "--routes", SERVED, "--nat")
            assert res.returncode == 0, res.stderr
            res = plat.cli("policy", "add", "--name", f"ops-{g.host.name}", "--from", "tag:ops",
                           "--gateway", g.name, "--routes", GRANTED,
                           "--acl", f"tcp:{TCP_OK},udp:{UDP_OK},icmp")
            assert res.returncode == 0, res.stderr
        for a in agents:
            a.start()
        for a in agents:
            a.wait_up()
        yield World(lab, plat, client, gws, lab.host("g3"))
    finally:
        for a in agents:
            a.down()
        if plat is not None:
            plat.stop()
        lab.close()


def _ready(w: World) -> World:
    """Both gateways running, connected and answering the client's probes, the granted subnet
    routed via one of them and g3 answering through it; ``active``/``standby`` as the client's
    status says now (each test starts from this state, whatever ran before it)."""
    c = w.client
    for g in w.gateways:
        if g.proc is None:  # stopped by an earlier test
            g.start()
            g.wait_up()
    names = {g.name: g for g in w.gateways}

    def routed() -> str | None:
        st = _gw_status(c)
        r = st.get("routes", {}).get(GRANTED)
        if r is None or st["down"] or not all(c.connected(n) for n in names):
            return None
        return str(r["gateway"])

    wait_for(routed, timeout=45, interval=0.2,
             what="client route via a gateway, both gateways connected and answering")
    wait_for(lambda: ping(c.host, LAN_HOST, count=1, timeout=0.5), timeout=15,
             what=f"first ping through the gateway (client gateway state: {_gw_status(c)})")
    # (read again, waiting: a gateway that missed PROBE_MISSES probes meanwhile, as on a loaded
    # machine, is "down" until its next answer)
    active = wait_for(routed, timeout=45, interval=0.2,
                      what="client route via a gateway, both answering, after the first ping")
    assert active is not None, _gw_status(c)
    w.active = names[active]
    w.standby = next(g for g in w.gateways if g is not w.active)
    return w


# -- traffic helpers (fixed ports: the ACL names them) ----------------------------------------


def _udp_echo(w: World, port: int, stop: threading.Event) -> tuple[socket.socket, threading.Thread]:
    """A UDP echo on the plain LAN host that appends the source address it saw."""
    srv = w.lan.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((LAN_HOST, port))
    srv.settimeout(0.1)

    def serve() -> None:
        while not stop.is_set():
            try:
                data, src = srv.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            srv.sendto(data + b"|" + src[0].encode(), src)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def _tcp_roundtrip(w: World, port: int, size: int = 1 << 20,
                   timeout: float = 5.0) -> tuple[bool, str]:
    """size random bytes client -> g3:port, digest echoed back; (ok, source g3 saw)."""
    lsock = w.lan.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((LAN_HOST, port))
    lsock.listen(1)
    lsock.settimeout(timeout)
    seen: dict[str, str] = {}

    def serve() -> None:
        try:
            conn, addr = lsock.accept()
        except OSError:
            return
        with conn:
            seen["src"] = addr[0]
            conn.settimeout(timeout)
            conn.sendall(read_digest(conn, size)[0])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    cli = w.client.host.socket(socket.AF_INET, socket.SOCK_STREAM)
    cli.settimeout(timeout)
    data = os.urandom(size)
    try:
        cli.connect((LAN_HOST, port))
        cli.sendall(data)
        digest = b""
        while len(digest) < 32:
            chunk = cli.recv(32 - len(digest))
            if not chunk:
                break
            digest += chunk
        return digest == hashlib.sha256(data).digest(), seen.get("src", "")
    finally:
        cli.close()
        lsock.close()
        t.join(timeout + 1)


# -- the tests (in order: the last one stops the active gateway) -------------------------------


def test_client_reaches_plain_lan_host(world: World) -> None:
    w = _ready(world)
    assert w.active is not None and w.standby is not None
    c = w.client
    assert not w.lan.run(["ip", "link", "show", "enclave0"]).returncode == 0  # no agent there
    # only the granted subnet is routed, via the active gateway's overlay IP, in table 51820
    st = _gw_status(c)
    assert set(st["routes"]) == {GRANTED}, st
    assert st["routes"][GRANTED]["via"] == w.active.overlay_ip
    route = c.host.run(["ip", "route", "get", LAN_HOST], check=True).stdout
    assert f"via {w.active.overlay_ip} dev enclave0" in route, route
    for g in w.gateways:
        gs = _gw_status(g)
        assert gs["served"] == [SERVED] and gs["nat"] is True and gs["filter"] is True, gs

    assert ping(c.host, LAN_HOST, count=5, timeout=3.0) == 5

    stop = threading.Event()
    srv, t = _udp_echo(w, UDP_OK, stop)
    cli = c.host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.settimeout(2.0)
    try:
        for i in range(10):
            msg = f"dgram {i}".encode() + os.urandom(300)
            cli.sendto(msg, (LAN_HOST, UDP_OK))
            back, src = cli.recvfrom(2048)
            assert src == (LAN_HOST, UDP_OK)
            assert back == msg + b"|" + _lan_ip(w.active).encode()  # masqueraded by A
    finally:
        stop.set()
        t.join(2)
        cli.close()
        srv.close()

    ok, src = _tcp_roundtrip(w, TCP_OK)
    assert ok and src == _lan_ip(w.active)
    # ping + UDP + TCP (segments may arrive coalesced up to 64 KiB by the TAP's offloads)
    assert _counters(w.active).get("routed", 0) >= 5 + 10 + (1 << 20) // 65536
    assert _counters(w.standby).get("routed", 0) == 0  # the standby idles
    connected_on(c, w.active, "direct-udp", 30)  # relay first: the punched path follows


def test_outside_acl_grant_and_routes_dropped_and_counted(world: World) -> None:
    w = _ready(world)
    assert w.active is not None
    c, a = w.client, w.active
    before = _counters(a)

    # outside the ACL: TCP 5202 (a listener is there) and UDP 5312 never reach g3
    lsock = w.lan.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind((LAN_HOST, TCP_DENIED))
    lsock.listen(1)
    conn = c.host.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn.settimeout(1.0)
    with pytest.raises(OSError):
        conn.connect((LAN_HOST, TCP_DENIED))
    conn.close()
    lsock.close()
    srv = w.lan.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((LAN_HOST, UDP_DENIED))
    srv.settimeout(0.5)
    cli = c.host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(3):
        cli.sendto(b"denied", (LAN_HOST, UDP_DENIED))
    with pytest.raises(TimeoutError):
        srv.recvfrom(100)
    srv.close()
    cli.close()

    # outside the grant (served subnet, but the policy grants only /28) and outside the
    # gateway's routes altogether: forced into the tunnel with host routes on the client
    extra = ("198.19.2.100/32", "198.18.0.1/32")
    for dst in extra:
        c.host.run(["ip", "route", "add", dst, "via", a.overlay_ip, "dev", "enclave0"],
                   check=True)
    try:
        assert ping(c.host, "198.19.2.100", count=2, timeout=0.5) == 0
        assert ping(c.host, "198.18.0.1", count=2, timeout=0.5) == 0
    finally:
        for dst in extra:
            c.host.run(["ip", "route", "del", dst])
    assert ping(a.host, "198.18.0.1", count=1) == 1  # reachable from the gateway itself

    after = _counters(a)
    assert after.get("acl_denied", 0) >= before.get("acl_denied", 0) + 4, (before, after)
    assert after.get("route_denied", 0) >= before.get("route_denied", 0) + 2, (before, after)
    assert after.get("not_routed", 0) >= before.get("not_routed", 0) + 2, (before, after)
    assert ping(c.host, LAN_HOST, count=2) == 2  # allowed traffic is unaffected


def _failover(w: World, src: Agent, dst: Agent, action: Any) -> float:
    """Echo UDP through the gateway every ~20 ms, run ``action()`` (which takes ``src`` out), and
    return the seconds until the first echo that went through ``dst``."""
    stop = threading.Event()
    srv, t = _udp_echo(w, UDP_OK, stop)
    cli = w.client.host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.settimeout(0.02)
    sources: list[tuple[float, str]] = []
    moved_at = None
    try:
        def exchange(seq: int) -> None:
            cli.sendto(seq.to_bytes(4, "big"), (LAN_HOST, UDP_OK))
            try:
                while True:
                    data, _ = cli.recvfrom(2048)
                    sources.append((time.monotonic(), data.split(b"|", 1)[1].decode()))
            except TimeoutError:
                pass

        seqs = iter(range(1 << 20))

        def echoed() -> bool:
            exchange(next(seqs))
            return bool(sources)

        wait_for(echoed, timeout=10, interval=0,
                 what=f"a UDP echo through {src.host.name} before it is taken out")
        assert sources[-1][1] == _lan_ip(src), sources
        t0 = time.monotonic()
        action()
        seq = 100
        while moved_at is None and time.monotonic() - t0 < 2 * FAILOVER_SPEC_S:
            seq += 1
            exchange(seq)
            moved_at = next((ts for ts, ip in sources if ts > t0 and ip == _lan_ip(dst)), None)
    finally:
        stop.set()
        t.join(2)
        cli.close()
        srv.close()
    assert moved_at is not None, ("traffic never moved to the standby; client gateway state: "
                                  f"{_gw_status(w.client)}")
    return moved_at - t0


def test_stopping_active_gateway_fails_over_within_5s(world: World) -> None:
    w = _ready(world)
    assert w.active is not None and w.standby is not None
    c, a, b = w.client, w.active, w.standby
    assert a.proc is not None
    proc = a.proc
    took = _failover(w, a, b, lambda: proc.send_signal(signal.SIGTERM))  # `enclave up` stops
    print(f"\ngateway failover (enclave up stopped on {a.host.name} -> first echo via "
          f"{b.host.name}): {took:.3f} s")
    assert took < FAILOVER_SPEC_S, took
    assert proc.wait(timeout=15) == 0, a.log()[-3000:]  # a clean exit on the one SIGTERM
    a.down()
    assert not a.has_link(), "the stopped gateway left its TAP behind"
    st = _gw_status(c)
    assert st["routes"][GRANTED]["gateway"] == b.name and st["failovers"] >= 1, st
    assert ping(c.host, LAN_HOST, count=3, timeout=3.0) == 3
    ok, src = _tcp_roundtrip(w, TCP_OK, size=256 << 10)
    assert ok and src == _lan_ip(b)
    # the stopped gateway removed its filter tables
    assert "enclave_gw" not in a.host.run(["nft", "list", "tables"], check=True).stdout
    w.active, w.standby = b, a


def test_hung_gateway_detected_by_probes_within_5s(world: World) -> None:
    """A restarted gateway comes back as the standby (the client does not flap back to it);
    the active one hangs (SIGSTOP: its control channel stays open, so no withdrawal comes), is
    found dead by the client's ICMP liveness probes, and the restarted one takes over."""
    w = _ready(world)
    assert w.active is not None and w.standby is not None
    c, b, a = w.client, w.active, w.standby
    failovers = _gw_status(c)["failovers"]
    a.down()  # `enclave up` on the standby stopped and started again
    wait_for(lambda: not c.connected(a.name), timeout=30, interval=0.2,
             what="client lost the stopped standby")
    a.start()
    a.wait_up()
    wait_for(lambda: c.connected(a.name) and a.name not in _gw_status(c)["down"],
             timeout=30, interval=0.2,
             what="restarted gateway connected again and eligible as standby")
    wait_for(lambda: ping(c.host, a.overlay_ip, count=1, timeout=0.5), timeout=10,
             what="restarted gateway answers on the overlay")
    st = _gw_status(c)
    assert st["routes"][GRANTED]["gateway"] == b.name and st["failovers"] == failovers, st
    assert b.proc is not None
    proc = b.proc
    try:
        took = _failover(w, b, a, lambda: proc.send_signal(signal.SIGSTOP))
    finally:
        proc.send_signal(signal.SIGCONT)
    print(f"\ngateway failover (enclave up hung on {b.host.name} -> first echo via "
          f"{a.host.name}): {took:.3f} s")
    assert took < FAILOVER_SPEC_S, took
    st = _gw_status(c)
    assert st["routes"][GRANTED]["gateway"] == a.name and st["failovers"] == failovers + 1, st
