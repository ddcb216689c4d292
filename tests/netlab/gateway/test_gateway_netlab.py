"""Gateways end to end in network namespaces (topology: tests/support/gateway_lab.py).

A NATed client reaches a plain LAN host behind a gateway with ping, TCP and UDP; traffic outside
the granted routes / ACL is dropped by the gateway and counted; a packet from a gateway with a
source outside its certified routes is dropped by the client; stopping the active gateway moves
traffic to the standby within 5 s.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from enclave.netlab import Host
from tests.support.gateway_lab import TOPOLOGY, GatewayLab, build
from tests.support.lab import LabFactory
from tests.support.traffic import ping

pytestmark = [pytest.mark.netlab, pytest.mark.timeout(120)]

LAN_HOST = "198.19.2.13"


@pytest.fixture
def gwlab(lab_factory: LabFactory) -> Iterator[GatewayLab]:
    lab = lab_factory(TOPOLOGY)
    gl = build(lab)
    try:
        yield gl
    finally:
        gl.close()


def _udp_pair(client: Host, server: Host, port: int) -> tuple[socket.socket, socket.socket]:
    srv = server.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((LAN_HOST, port))
    srv.settimeout(3.0)
    cli = client.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.settimeout(3.0)
    return cli, srv


def _counters(gl: GatewayLab, name: str) -> dict[str, int]:
    m = next(x for x in [gl.client, *gl.gateways] if x.name == name)
    got = m.host.call(gl.managers[name].counters)
    total: dict[str, int] = {}
    for values in got.values():
        for k, v in values.items():
            total[k] = total.get(k, 0) + v
    return total


def test_client_reaches_lan_host_through_gateway(gwlab: GatewayLab) -> None:
    a1, b3 = gwlab.client.host, gwlab.lab.host("b3")
    g1 = gwlab.gateways[0]
    route = a1.run(["ip", "route", "get", LAN_HOST], check=True).stdout
    assert "dev enclave0" in route and "via 100.64.0.2" in route, route
    shown = a1.run(["ip", "route", "show", "table", "51820"], check=True).stdout
    assert "198.19.2.0/24 via 100.64.0.2 dev enclave0 proto static metric 50" in shown, shown
    # the tunnel itself (marked data socket) still reaches the gateway over the underlay
    marked = a1.run(["ip", "route", "get", "198.19.2.11", "mark", "0x454e4353"], check=True)
    assert "dev eth0" in marked.stdout
    assert b3.run(["ip", "link", "show", "enclave0"]).returncode != 0  # no agent on the LAN host

    assert ping(a1, LAN_HOST, count=3, timeout=2.0) == 3

    # UDP: the LAN host sees gateway 1's LAN address (masquerade), not the client's NAT
    cli, srv = _udp_pair(a1, b3, 7001)
    cli.sendto(b"hello", (LAN_HOST, 7001))
    data, src = srv.recvfrom(100)
    assert data == b"hello" and src[0] == str(g1.host.ip)
    srv.sendto(b"back", src)
    assert cli.recvfrom(100)[0] == b"back"

    # TCP
    lsock = b3.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((LAN_HOST, 7000))
    lsock.listen(1)
    lsock.settimeout(5.0)
    conn = a1.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn.settimeout(5.0)
    conn.connect((LAN_HOST, 7000))
    peer, addr = lsock.accept()
    with peer:
        assert addr[0] == str(g1.host.ip)
        payload = bytes(range(256)) * 1024
        conn.sendall(payload)
        got = b""
        peer.settimeout(5.0)
        while len(got) < len(payload):
            chunk = peer.recv(65536)
            assert chunk
            got += chunk
        assert got == payload
        peer.sendall(b"ok")
        assert conn.recv(10) == b"ok"
    conn.close()
    assert _counters(gwlab, g1.name)["routed"] > 0
    assert _counters(gwlab, gwlab.gateways[1].name).get("routed", 0) == 0  # the standby idled


def test_outside_routes_and_acl_dropped_and_counted(gwlab: GatewayLab) -> None:
    a1, b3 = gwlab.client.host, gwlab.lab.host("b3")
    g1 = gwlab.gateways[0]
    before = _counters(gwlab, g1.name)

    # ACL: tcp:7000 and udp:7001 are granted; tcp:7002 is not (a listener is there)
    lsock = b3.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind((LAN_HOST, 7002))
    lsock.listen(1)
    conn = a1.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn.settimeout(1.0)
    with pytest.raises(OSError):
        conn.connect((LAN_HOST, 7002))
    conn.close()
    cli, srv = _udp_pair(a1, b3, 7003)
    srv.settimeout(0.5)
    cli.sendto(b"x", (LAN_HOST, 7003))
    with pytest.raises(TimeoutError):
        srv.recvfrom(10)

    # a served subnet address outside the grant (198.19.2.0/28): route_denied
    assert ping(a1, "198.19.2.100", count=2) == 0
    # an address the gateway does not serve at all (the internet router): not_routed
    a1.run(["ip", "route", "add", "198.18.0.1/32", "via", "100.64.0.2", "dev", "enclave0"],
           check=True)
    assert ping(a1, "198.18.0.1", count=2) == 0
    assert ping(g1.host, "198.18.0.1", count=1) == 1  # reachable from the gateway itself

    after = _counters(gwlab, g1.name)
    for reason in ("acl_denied", "route_denied", "not_routed"):
        assert after.get(reason, 0) > before.get(reason, 0), (reason, before, after)

    # client side: "routed" traffic from a gateway with a source outside its certified routes
    # is dropped by the client's data plane before its TAP (identity binding, rx_ip_spoofed),
    # so the nft anti-spoofing rule behind it (spoofed_src) never needs to see it
    cbefore = gwlab.client.dp.peer_counters(g1.name)["rx_ip_spoofed"]
    g1.host.run(["ip", "addr", "add", "10.99.0.1/32", "dev", "enclave0"], check=True)
    assert ping(g1.host, "100.64.0.1", count=2, from_ip="10.99.0.1") == 0
    assert gwlab.client.dp.peer_counters(g1.name)["rx_ip_spoofed"] >= cbefore + 2
    # ... while its own overlay address is fine
    assert ping(g1.host, "100.64.0.1", count=1, timeout=2.0) == 1


def test_failover_to_standby_within_5s(gwlab: GatewayLab) -> None:
    a1, b3 = gwlab.client.host, gwlab.lab.host("b3")
    g1, g2 = gwlab.gateways
    cli, srv = _udp_pair(a1, b3, 7001)
    srv.settimeout(0.05)
    cli.sendto(b"warm", (LAN_HOST, 7001))
    srv.settimeout(3.0)
    assert srv.recvfrom(100)[1][0] == str(g1.host.ip)
    srv.settimeout(0.05)

    t0 = time.monotonic()
    gwlab.stop_gateway(g1)
    seq = 0
    moved_at = None
    while time.monotonic() - t0 < 8.0 and moved_at is None:
        seq += 1
        cli.sendto(seq.to_bytes(4, "big"), (LAN_HOST, 7001))
        try:
            while True:
                _data, src = srv.recvfrom(100)
                if src[0] == str(g2.host.ip):
                    moved_at = time.monotonic()
                    break
        except TimeoutError:
            pass
    assert moved_at is not None, "traffic never moved to the standby gateway"
    took = moved_at - t0
    print(f"gateway failover: {took:.2f}s")
    assert took < 5.0
    mgr = gwlab.managers[gwlab.client.name]
    assert mgr.failovers == 1
    assert "via 100.64.0.3" in a1.run(["ip", "route", "get", LAN_HOST], check=True).stdout
    assert ping(a1, LAN_HOST, count=2, timeout=2.0) == 2
