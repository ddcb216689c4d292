"""Stateful gateway ACLs in routed mode (topology: tests/support/gateway_lab.py, nat=False).

    a1 client 100.64.0.1 ==overlay==> b1 gateway (routed, ACL icmp,tcp:7000,udp:7001)
                                        | forward (ip enclave_gw: prerouting after conntrack)
                                      b3 198.19.2.13 plain LAN host, route 100.64.0.0/10 via b1

The ACL decides which *new* flows the client may open into the LAN. A flow the LAN host opens
towards the client's overlay IP (to a port no ACL entry names) completes: the client's replies
are ``ct state established`` on the gateway. A flow the client opens to a port outside the ACL
is still dropped and counted as ``acl_denied`` for that client, also towards the gateway's own
LAN address (the decision is taken in prerouting, before the input/forward split).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support.gateway_lab import TOPOLOGY, GatewayLab, build
from tests.support.lab import LabFactory

pytestmark = [pytest.mark.netlab, pytest.mark.timeout(120)]

LAN_HOST = "198.19.2.13"
CLIENT_IP = "100.64.0.1"
OPEN_TCP, OPEN_UDP = 7100, 7101  # on the client; the ACL names neither
DENIED_TCP, DENIED_UDP = 7002, 7003  # on the LAN host; the ACL names neither


@pytest.fixture
def routed(lab_factory: LabFactory) -> Iterator[GatewayLab]:
    lab = lab_factory(TOPOLOGY)
    gl = build(lab, nat=False)
    try:
        g1 = gl.gateways[0]
        lab.host("b3").run(["ip", "route", "add", "100.64.0.0/10", "via", str(g1.host.ip)],
                           check=True)
        yield gl
    finally:
        gl.close()


def _client_counters(gl: GatewayLab) -> dict[str, int]:
    """The gateway's counters for the client (both tables, merged by the manager)."""
    g1 = gl.gateways[0]
    got = g1.host.call(gl.managers[g1.name].counters)
    return dict(got.get(gl.client.name, {}))


def test_lan_initiated_flows_pass_client_initiated_outside_acl_dropped(
        routed: GatewayLab) -> None:
    a1, b3 = routed.client.host, routed.lab.host("b3")
    g1 = routed.gateways[0]
    assert "via 100.64.0.2" in a1.run(["ip", "route", "get", LAN_HOST], check=True).stdout
    ruleset = g1.host.run(["nft", "list", "table", "ip", "enclave_gw"], check=True).stdout
    assert "ct state established,related" in ruleset and "masquerade" not in ruleset
    before = _client_counters(routed)
    assert before.get("acl_denied") == 0 and "routed" in before, before

    # TCP opened by the plain LAN host towards the client's overlay IP: completes both ways
    lsock = a1.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind((CLIENT_IP, OPEN_TCP))
    lsock.listen(1)
    lsock.settimeout(5.0)
    with lsock:
        conn = b3.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.settimeout(5.0)
        with conn:
            conn.connect((CLIENT_IP, OPEN_TCP))
            peer, addr = lsock.accept()
            with peer:
                assert addr[0] == LAN_HOST  # routed: the client sees the LAN host itself
                peer.settimeout(5.0)
                conn.sendall(b"from the LAN")
                assert peer.recv(100) == b"from the LAN"
                payload = bytes(range(256)) * 256  # 64 KiB of replies, many segments
                peer.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    chunk = conn.recv(65536)
                    assert chunk
                    got += chunk
                assert got == payload

    # UDP opened by the LAN host: the client's answer passes as a reply
    srv = a1.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((CLIENT_IP, OPEN_UDP))
    srv.settimeout(3.0)
    cli = b3.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.settimeout(3.0)
    with srv, cli:
        cli.sendto(b"ping", (CLIENT_IP, OPEN_UDP))
        data, src = srv.recvfrom(100)
        assert data == b"ping" and src[0] == LAN_HOST
        srv.sendto(b"pong", src)
        assert cli.recvfrom(100) == (b"pong", (CLIENT_IP, OPEN_UDP))

    mid = _client_counters(routed)
    assert mid["acl_denied"] == 0, mid  # not a single reply was taken for a new flow
    assert mid["routed"] >= before["routed"] + 2 + len(payload) // 65536, (before, mid)

    # the client opening flows to ports outside the ACL: still dropped, counted acl_denied
    lsock = b3.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind((LAN_HOST, DENIED_TCP))
    lsock.listen(1)
    with lsock:
        conn = a1.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.settimeout(1.0)
        with conn, pytest.raises(OSError):
            conn.connect((LAN_HOST, DENIED_TCP))
    srv = b3.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((LAN_HOST, DENIED_UDP))
    srv.settimeout(0.5)
    cli = a1.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with srv, cli:
        for _ in range(3):
            cli.sendto(b"denied", (LAN_HOST, DENIED_UDP))
        with pytest.raises(TimeoutError):
            srv.recvfrom(100)
    # the gateway's own LAN address lies in the grant too: a new flow to it is decided before
    # routing (prerouting), so the input path is no way around the ACL
    gsock = g1.host.socket(socket.AF_INET, socket.SOCK_STREAM)
    gsock.bind((str(g1.host.ip), DENIED_TCP))
    gsock.listen(1)
    with gsock:
        conn = a1.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.settimeout(1.0)
        with conn, pytest.raises(OSError):
            conn.connect((str(g1.host.ip), DENIED_TCP))
    gsock = g1.host.socket(socket.AF_INET, socket.SOCK_STREAM)  # the port the ACL names opens
    gsock.bind((str(g1.host.ip), 7000))
    gsock.listen(1)
    gsock.settimeout(5.0)
    with gsock:
        conn = a1.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.settimeout(5.0)
        with conn:
            conn.connect((str(g1.host.ip), 7000))
            gsock.accept()[0].close()
    after = _client_counters(routed)
    assert after["acl_denied"] >= 2 + 3, after  # at least two SYNs and the three datagrams
    assert after.get("forward_denied", 0) == 0  # the pending mark never reached forward

    # ... and a flow the ACL names still opens from the client side
    srv = b3.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((LAN_HOST, 7001))
    srv.settimeout(3.0)
    cli = a1.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.settimeout(3.0)
    with srv, cli:
        cli.sendto(b"allowed", (LAN_HOST, 7001))
        data, src = srv.recvfrom(100)
        assert data == b"allowed" and src[0] == CLIENT_IP
        srv.sendto(b"ok", src)
        assert cli.recvfrom(100)[0] == b"ok"
