"""TapRelay, the bench's relay reference (enclave/_fp_relay.pxi): frames cross between two TAPs
in two lab namespaces byte for byte, with and without vnet_hdr/TSO, sealed and opened on the way."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Callable

import pytest

from enclave._fastpath import AeadKey, TapRelay
from enclave.dataplane.tap import TapDevice
from enclave.netlab import Lab, NatType, Site, Topology, netns

pytestmark = [pytest.mark.netlab, pytest.mark.root]

TWO = Topology(sites=[Site("a", nat=NatType.FULL_CONE), Site("b", nat=NatType.PORT_RESTRICTED)])
A_IP, B_IP, PORT = "100.127.255.1", "100.127.255.2", 5299
PAYLOAD = os.urandom(3 * 2**20 + 17)


def _transfer(a_ns: str, b_ns: str) -> str:
    """Send PAYLOAD over TCP a -> b across the relay; the sha256 b received."""
    srv = netns.socket_in_netns(b_ns, socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((B_IP, PORT))
    srv.listen(1)
    srv.settimeout(10)
    digest: list[str] = []

    def receive() -> None:
        conn, _ = srv.accept()
        conn.settimeout(10)
        h = hashlib.sha256()
        with conn:
            while chunk := conn.recv(1 << 16):
                h.update(chunk)
        digest.append(h.hexdigest())

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    cli = netns.socket_in_netns(a_ns, socket.AF_INET, socket.SOCK_STREAM)
    cli.settimeout(10)
    with cli:
        cli.connect((B_IP, PORT))
        cli.sendall(PAYLOAD)
        cli.shutdown(socket.SHUT_WR)
        t.join(20)
    srv.close()
    assert digest, "receiver got no connection or did not finish"
    return digest[0]


@pytest.mark.parametrize(("vnet", "passes", "cipher"), [
    (False, 0, None),
    (True, 0, None),
    (False, 2, "aes256gcm"),
    (True, 2, "aes256gcm"),
    (True, 2, "chacha20poly1305"),
    (True, 2, "aegis256"),  # a 32-byte tag per piece
    (True, 1, "aes256gcm"),
])
def test_relay_carries_tcp_intact(lab_factory: Callable[..., Lab], vnet: bool, passes: int,
                                  cipher: str | None) -> None:
    lab = lab_factory(TWO)
    a, b = lab.host("a1"), lab.host("b1")
    key = AeadKey(cipher, os.urandom(32)) if cipher else None
    with TapDevice("ceil0", address=f"{A_IP}/30", vnet_hdr=vnet, offload=vnet,
                   netns=a.netns) as ta, \
         TapDevice("ceil0", address=f"{B_IP}/30", vnet_hdr=vnet, offload=vnet,
                   netns=b.netns) as tb:
        assert ta.vnet_hdr == tb.vnet_hdr == vnet
        relay = TapRelay(ta.fd, tb.fd, vnet_hdr=vnet, passes=passes, key=key, segment=1420)
        with relay:
            received = _transfer(a.netns, b.netns)
        counters = relay.counters()
    assert received == hashlib.sha256(PAYLOAD).hexdigest()
    assert counters["failures"] == 0 and counters["write_errors"] == 0
    assert counters["frames"][0] > 0 and counters["frames"][1] > 0  # data one way, ACKs back
    assert counters["bytes"][0] > len(PAYLOAD)  # headers on top of every byte sent
    if vnet:  # TSO: far fewer frames than MSS-sized segments
        assert counters["frames"][0] < len(PAYLOAD) // 1354


def test_relay_stops_promptly_when_idle(lab_factory: Callable[..., Lab]) -> None:
    lab = lab_factory(TWO)
    a, b = lab.host("a1"), lab.host("b1")
    with TapDevice("ceil0", address=f"{A_IP}/30", netns=a.netns) as ta, \
         TapDevice("ceil0", address=f"{B_IP}/30", netns=b.netns) as tb:
        relay = TapRelay(ta.fd, tb.fd, vnet_hdr=False, passes=0)
        relay.start()
        with pytest.raises(RuntimeError):
            relay.start()
        relay.stop()
        assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("relay-"))


def test_relay_stops_while_traffic_flows(lab_factory: Callable[..., Lab]) -> None:
    """stop() in the middle of a bulk transfer: every relay thread ends, none stays behind
    with the buffers."""
    lab = lab_factory(TWO)
    a, b = lab.host("a1"), lab.host("b1")
    key = AeadKey("aes256gcm", os.urandom(32))
    with TapDevice("ceil0", address=f"{A_IP}/30", vnet_hdr=True, offload=True,
                   netns=a.netns) as ta, \
         TapDevice("ceil0", address=f"{B_IP}/30", vnet_hdr=True, offload=True,
                   netns=b.netns) as tb:
        relay = TapRelay(ta.fd, tb.fd, vnet_hdr=True, passes=2, key=key)
        relay.start()
        srv = netns.socket_in_netns(b.netns, socket.AF_INET, socket.SOCK_STREAM)
        srv.bind((B_IP, PORT))
        srv.listen(1)
        srv.settimeout(10)
        cli = netns.socket_in_netns(a.netns, socket.AF_INET, socket.SOCK_STREAM)
        cli.settimeout(2)
        cli.connect((B_IP, PORT))
        conn, _ = srv.accept()
        conn.settimeout(2)
        moved = threading.Event()

        def sink() -> None:
            try:
                while conn.recv(1 << 16):
                    moved.set()
            except OSError:
                pass

        def pump() -> None:
            try:
                while True:
                    cli.sendall(PAYLOAD)
            except OSError:
                pass

        threads = [threading.Thread(target=f, daemon=True) for f in (sink, pump)]
        for t in threads:
            t.start()
        assert moved.wait(10), "no data crossed the relay"
        relay.stop()
        assert not any(t.is_alive() for t in threading.enumerate()
                       if t.name.startswith("relay-"))
        for s in (cli, conn, srv):
            s.close()
        for t in threads:
            t.join(5)
        assert relay.counters()["failures"] == 0
