"""A one-way cut: the side that stops hearing moves to the relay, and the other side follows
-- on fresh relayed DATA only, never on a replay of it.

    fa1  full-cone NAT  ---- direct-udp ----  fb1  full-cone NAT
         fa's router starts dropping what it forwards TO fb's public address (one way):
           fb1 hears nothing from fa1 -> its path watch moves the session to relay-udp
           fa1 still hears fb1 (now relayed), so its own watch stays quiet, while its sends
           go to the dead direct path -> relayed frames on a direct session move fa1 onto the
           relay too (ConnectionManager._follow_relayed_rx); before, fa1 stayed on direct-udp
           and nothing it sent arrived
         the cut is lifted -> both sides back on direct-udp

Pings run both ways throughout (each side sends, so each side's watch has something to judge).

The second test follows on DATA alone (fa's router drops the relayed keepalive that would move
fa1 as a roam): the data plane reports relayed DATA that opens as the newest packet on the
key (PUNT_RELAYED), and fa1 follows; relayed DATA captured at the relay host and sent again
later from the relay's address (both back on direct-udp) fails the replay window and moves
nothing (before, any relayed DATA on a direct session, then any authentic rx, moved it).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from enclave.netlab import Lab, NatType, Site, Topology, netns
from tests.support.lab import Agent, intents_both_ways, platform_lab, start_all
from tests.support.peer_paths import connected_on
from tests.support.traffic import ping
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]

World = tuple[Lab, dict[str, Agent]]
CUT_TABLE = "enclave_test_oneway"
KEEPALIVE_TABLE = "enclave_test_no_relayed_keepalive"
RELAY_DATA, DATA = 35, 4  # enclave.proto.wire MSG_RELAY_DATA / MSG_DATA
ETH_P_ALL = 0x0003  # a packet socket sees outgoing frames only with this protocol
# a relayed keepalive: UDP header 8 + relay header 8 + CONTROL (16 header + 2 + 16 tag) = 50
RELAYED_KEEPALIVE_UDP_LEN = 50


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    topo = Topology(sites=[Site("fa", nat=NatType.FULL_CONE), Site("fb", nat=NatType.FULL_CONE)],
                    public_hosts=["plat"])
    with platform_lab(topo, tmp_path_factory.mktemp("follow"), ["fa1", "fb1"]) as w:
        start_all(w[2].values())
        yield w[0], w[2]


def one_way_cut(router_netns: str, to_ip: str, on: bool) -> None:
    if on:
        rules = (f"table ip {CUT_TABLE} {{\n  chain forward {{\n"
                 "    type filter hook forward priority filter - 10; policy accept;\n"
                 f"    ip daddr {to_ip} drop\n  }}\n}}\n")
        netns.run(netns.exec_argv(router_netns, ["nft", "-f", "-"]), input=rules)
    else:
        netns.run(netns.exec_argv(router_netns, ["nft", "delete", "table", "ip", CUT_TABLE]))


def drop_relayed_keepalives(router_netns: str, relay: tuple[str, int], on: bool) -> None:
    if on:
        rules = (f"table ip {KEEPALIVE_TABLE} {{\n  chain forward {{\n"
                 "    type filter hook forward priority filter - 10; policy accept;\n"
                 f"    ip saddr {relay[0]} udp sport {relay[1]} "
                 f"udp length {RELAYED_KEEPALIVE_UDP_LEN} drop\n  }}\n}}\n")
        netns.run(netns.exec_argv(router_netns, ["nft", "-f", "-"]), input=rules)
    else:
        netns.run(netns.exec_argv(router_netns, ["nft", "delete", "table", "ip", KEEPALIVE_TABLE]))


class RelayedDataCapture:
    """IPv4 packets leaving the relay host from the relay's port to `dst_ip` that carry
    RELAY_DATA around DATA (an ETH_P_ALL packet socket in the relay host's namespace, read on
    a thread)."""

    def __init__(self, sock: socket.socket, relay: tuple[str, int], dst_ip: str) -> None:
        self.sock, self.relay, self.dst = sock, relay, socket.inet_aton(dst_ip)
        self.src = socket.inet_aton(relay[0])
        self.packets: list[bytes] = []
        self.seen: list[tuple[str, int, int, int]] = []  # (dst, sport, type, inner)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                frame = self.sock.recv(65535)
            except TimeoutError:
                continue
            ip = frame[14:]
            if (frame[12:14] != b"\x08\x00" or len(ip) < 20 or ip[9] != socket.IPPROTO_UDP
                    or ip[12:16] != self.src):
                continue
            udp = ip[(ip[0] & 0x0F) * 4:]
            sport = struct.unpack("!H", udp[:2])[0]
            if len(self.seen) < 50 and len(udp) > 16:
                self.seen.append((socket.inet_ntoa(ip[16:20]), sport, udp[8], udp[16]))
            if ip[16:20] == self.dst and sport == self.relay[1] and len(udp) > 17 \
                    and udp[8] == RELAY_DATA \
                    and udp[16] == DATA:
                # as sent again: UDP checksum 0 (none; a captured outgoing packet may still
                # hold only the offloaded partial sum)
                ihl = (ip[0] & 0x0F) * 4
                self.packets.append(bytes(ip[:ihl + 6]) + b"\0\0" + bytes(ip[ihl + 8:]))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def counter(a: Agent, b: Agent, key: str) -> int:
    p = a.connected(b.name)
    assert p is not None
    return int(p.get("dataplane", {}).get(key, 0))


def test_fresh_relayed_data_moves_the_session_a_replay_of_it_does_not(world: World) -> None:
    lab, ag = world
    a, b = ag["fa1"], ag["fb1"]
    intents_both_ways(a, b)  # (again: a no-op when the first test ran)
    connected_on(a, b, "direct-udp", 60)
    connected_on(b, a, "direct-udp", 60)
    relay_ep = a.connected(b.name)
    assert relay_ep is not None and relay_ep["relay"], relay_ep
    host, port = str(relay_ep["relay"]).rsplit(":", 1)
    relay = (host, int(port))
    plat = lab.host("plat")
    capture = RelayedDataCapture(plat.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                             socket.htons(ETH_P_ALL)),
                                 relay, str(a.host.public_ip))
    stop = threading.Event()

    def pinger(src: Agent, dst: Agent) -> None:
        while not stop.is_set():
            ping(src.host, dst.overlay_ip, count=1, timeout=1.0)
            time.sleep(0.2)

    threads = [threading.Thread(target=pinger, args=(a, b), daemon=True),
               threading.Thread(target=pinger, args=(b, a), daemon=True)]
    for t in threads:
        t.start()
    router = lab.site("fa").router_netns
    cut = False
    try:
        drop_relayed_keepalives(router, relay, True)
        one_way_cut(router, str(b.host.public_ip), True)
        cut = True
        connected_on(b, a, "relay-udp", 60)
        connected_on(a, b, "relay-udp", 60)  # followed on DATA: its keepalives never came
        assert "now sends over the relay; following it there" in a.log()
        wait_for(lambda: len(capture.packets) >= 5, timeout=30,
                 what=f"relayed DATA captured (saw {capture.seen[-10:]})")
        handshake_at = (a.connected(b.name) or {}).get("last_handshake_at")
        one_way_cut(router, str(b.host.public_ip), False)
        drop_relayed_keepalives(router, relay, False)
        cut = False
        connected_on(a, b, "direct-udp", 60)
        connected_on(b, a, "direct-udp", 60)
        capture.close()
        moves = a.connected(b.name)
        assert moves is not None
        replays_before = counter(a, b, "rx_replay")
        keys = moves["last_handshake_at"]
        raw = plat.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        for packet in capture.packets[-20:]:  # again, from the relay's address and port
            raw.sendto(packet, (str(a.host.public_ip), 0))
        if keys == handshake_at:  # no rekey since the capture: the same keys, so the window
            wait_for(lambda: counter(a, b, "rx_replay") > replays_before, timeout=10,
                     what="the replayed relayed DATA reached fa1's data plane (dropped)")
        time.sleep(2.0)  # pings keep running: rx on the key, which used to complete a follow
        after = a.connected(b.name)
        assert after is not None and after["path"] == "direct-udp", after
        assert after["path_changes"] == moves["path_changes"], (moves, after)
    finally:
        stop.set()
        capture.close()
        for t in threads:
            t.join(10)
        if cut:
            one_way_cut(router, str(b.host.public_ip), False)
            drop_relayed_keepalives(router, relay, False)


def test_one_way_cut_both_sides_end_on_the_relay(world: World) -> None:
    lab, ag = world
    a, b = ag["fa1"], ag["fb1"]
    intents_both_ways(a, b)
    connected_on(a, b, "direct-udp", 40)
    connected_on(b, a, "direct-udp", 10)
    wait_for(lambda: ping(a.host, b.overlay_ip, count=1, timeout=1.0), timeout=10,
             what="first ping")
    stop = threading.Event()
    answered: dict[str, list[bool]] = {"ab": [], "ba": []}

    def pinger(src: Agent, dst: Agent, key: str) -> None:
        while not stop.is_set():
            answered[key].append(bool(ping(src.host, dst.overlay_ip, count=1, timeout=1.0)))
            time.sleep(0.2)

    threads = [threading.Thread(target=pinger, args=(a, b, "ab"), daemon=True),
               threading.Thread(target=pinger, args=(b, a, "ba"), daemon=True)]
    for t in threads:
        t.start()
    router = lab.site("fa").router_netns
    cut = False
    try:
        one_way_cut(router, str(b.host.public_ip), True)
        cut = True
        connected_on(b, a, "relay-udp", 60)  # the side that hears nothing moves
        connected_on(a, b, "relay-udp", 60)  # ... and the side that still hears follows
        start = len(answered["ab"])
        wait_for(lambda: len(answered["ab"]) >= start + 5 and all(answered["ab"][-5:]),
                 timeout=30, interval=0.3, what="a -> b pings answered over the relay")
        one_way_cut(router, str(b.host.public_ip), False)
        cut = False
        connected_on(a, b, "direct-udp", 60)  # both come back once the direct path answers
        connected_on(b, a, "direct-udp", 60)
        start = len(answered["ab"])
        wait_for(lambda: len(answered["ab"]) >= start + 5 and all(answered["ab"][-5:]),
                 timeout=30, interval=0.3, what="a -> b pings answered on the direct path")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        if cut:
            one_way_cut(router, str(b.host.public_ip), False)
