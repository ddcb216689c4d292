"""A stranger gets nothing from any surface an agent opens (issue 12's "answers nothing, on any
port, to a party it was not introduced to"), read off the stranger's own wire (AF_PACKET,
tests/netlab/cloaking/sniff.py): no UDP answer, no SYN-ACK, no RST, no ICMP error.

    plat 198.18.0.11 (platform, relay)      evil 198.18.0.12 + IPv6 (the public stranger)
          |                                        |
    +-----+----------------------------------------+------------- inet --------------+
    |  b (no NAT, IPv6 open): b1 agent (--threads 2: two SO_REUSEPORT data sockets),  |
    |                         b2 (the stranger on b1's own LAN)                        |
    |  m (symmetric NAT + miniupnpd): m1 agent, its data port mapped on the router     |
    +---------------------------------------------------------------------------------+

Surfaces: the UDP data port over IPv4 and over the IPv6 side of the dual-stack socket, both
workers' sockets; the TCP data port (nft guard) over both families; the port-mapped external
port; the handshake and data packets m1 sent b1, replayed from the strangers; relay-shaped
frames, also from a spoofed relay address; the DNS listener on the overlay IP, reached from the
LAN by routing the overlay range to b1 (Linux accepts a packet for any local address on any
interface); and a junk flood from thousands of spoofed sources, which leaves b1's file
descriptors and drop reasons where they were.
"""

from __future__ import annotations

import ipaddress
import random
import shutil
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from enclave.dataplane.checksum import inet_checksum
from enclave.netlab import Host, Lab, NatType, Site, Topology, upnp
from enclave.netlab.topology import V6Mode
from enclave.proto.wire import (
    MSG_DATA,
    MSG_HANDSHAKE_INIT,
    MSG_HANDSHAKE_INIT_V1,
    MSG_HANDSHAKE_RESPONSE,
    MSG_RELAY_CHALLENGE,
    MSG_RELAY_DATA,
    MSG_RELAY_REGISTERED,
    RELAY_HEADER_SIZE,
    pack_relay_header,
)
from tests.netlab.cloaking.sniff import Sniffer
from tests.support.junk import init_shaped
from tests.support.lab import Agent, intents_both_ways, platform_lab
from tests.support.peer_paths import connected_on
from tests.support.platform import Platform
from tests.support.traffic import ping
from tests.support.wait import wait_for

pytestmark = [
    pytest.mark.netlab,
    pytest.mark.root,
    pytest.mark.skipif(shutil.which(upnp.MINIUPNPD) is None,
                       reason="miniupnpd not installed (install.sh test installs it)"),
]

PORT = 51820
SETTLE = 1.5  # s the stranger keeps listening after its last probe
World = tuple[Lab, Platform, dict[str, Agent]]


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    topo = Topology(sites=[Site("b", nat=NatType.NONE, hosts=2, ipv6=V6Mode.OPEN),
                           Site("m", nat=NatType.SYMMETRIC, upnp=True)],
                    public_hosts=["plat", "evil"], ipv6=True)
    with platform_lab(topo, tmp_path_factory.mktemp("stranger"), ("b1", "m1")) as w:
        _lab, _plat, ag = w
        ag["b1"].start("--threads", "2")
        ag["m1"].start()
        for a in ag.values():
            a.wait_up()
        yield w


def _probes(rng: random.Random) -> list[bytes]:
    """Junk, INIT-shaped (old and new type words, some with a consistent length so MAC1 is
    computed), DATA- and relay-shaped datagrams."""
    out = [b"", b"\x00", b"hello", bytes([4, 0, 0, 0]) + bytes(60),
           bytes([MSG_HANDSHAKE_INIT_V1, 0, 0, 0]) + bytes(1400)]
    out += [init_shaped(rng, kinds=(MSG_HANDSHAKE_INIT, MSG_HANDSHAKE_INIT_V1)) for _ in range(16)]
    out += [pack_relay_header(k, rng.getrandbits(32)) + rng.randbytes(rng.randrange(0, 200))
            for k in (MSG_RELAY_CHALLENGE, MSG_RELAY_REGISTERED, MSG_RELAY_DATA) for _ in range(4)]
    return out


def _udp(src: Host, dst: str, port: int, payloads: list[bytes], sockets: int = 16) -> None:
    """Send every payload from each of `sockets` fresh source ports (so the kernel's
    SO_REUSEPORT hash spreads them over all of the agent's data sockets)."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    for _ in range(sockets):
        s = src.socket(family, socket.SOCK_DGRAM)
        try:
            for p in payloads:
                s.sendto(p, (dst, port))
        finally:
            s.close()


def _tcp(src: Host, dst: str, port: int, payload: bytes = b"\x00\x05hello") -> str:
    """A TCP connect (then junk, if it were accepted): "accepted", "refused" or "silence"."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = src.socket(family, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect((dst, port))
        s.sendall(payload)
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "silence"
    finally:
        s.close()
    return "accepted"


def _icmp_error_at(src: Host, dst: str, port: int) -> None:
    """An ICMP port-unreachable that quotes a datagram dst:PORT -> 198.18.99.99:port (what a
    stranger can forge about an agent's flow)."""
    inner_udp = struct.pack("!HHHH", PORT, port, 8, 0)
    inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0,
                        socket.inet_aton(dst), socket.inet_aton("198.18.99.99")) + inner_udp
    s = src.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        body = struct.pack("!BBHI", 3, 3, 0, 0) + inner
        csum = inet_checksum(body)
        s.sendto(body[:2] + struct.pack("!H", csum) + body[4:], (dst, 0))
    finally:
        s.close()


def _ipv4_udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + udp


def _ipv4_syn(src: str, sport: int, dst: str, dport: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, random.getrandbits(32), 0, 5 << 4, 0x02,
                      64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", inet_checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, socket.IPPROTO_TCP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + tcp


def _agent_fds(agent: Agent) -> int:
    assert agent.proc is not None
    out = agent.host.run(["sh", "-c", f"pgrep -f -- '--state {agent.state}' | head -1"])
    pid = out.stdout.strip()
    assert pid, out
    return len(agent.host.run(["ls", f"/proc/{pid}/fd"]).stdout.split())


def _connected(world: World) -> tuple[Agent, Agent]:
    _lab, _plat, ag = world
    b1, m1 = ag["b1"], ag["m1"]
    if b1.connected(m1.name) is None:
        intents_both_ways(b1, m1)
    connected_on(b1, m1, "direct-udp", 45)
    # m1 may see b1's unNATed address as "lan": any direct path
    wait_for(lambda: (m1.connected(b1.name) or {}).get("path") in ("lan", "direct-udp"),
             timeout=15, interval=0.3, what="m1 -> b1 direct")
    return b1, m1


def test_the_data_port_gives_a_stranger_nothing_on_either_family_and_every_worker(
        world: World) -> None:
    lab, _plat, _ag = world
    b1, m1 = _connected(world)
    evil, b2 = lab.public_host("evil"), lab.host("b2")
    b_ip, b_ip6 = str(b1.host.ip), str(b1.host.ip6)
    assert b1.host.ip6 is not None and evil.ip6 is not None
    # --threads 2: two UDP sockets share the data port (SO_REUSEPORT)
    ss = b1.host.run(["ss", "-Huan", "sport", "=", f":{PORT}"]).stdout.splitlines()
    assert len(ss) == 2, ss
    before = b1.status()["node_drops"]
    rng = random.Random(7)
    with Sniffer(evil, {b_ip, b_ip6}) as heard_evil, Sniffer(b2, {b_ip, b_ip6}) as heard_lan:
        for src in (evil, b2):
            for dst in (b_ip, b_ip6):
                _udp(src, dst, PORT, _probes(rng))
                assert _tcp(src, dst, PORT) == "silence", (src.name, dst)
            _icmp_error_at(src, b_ip, 40000)
        time.sleep(SETTLE)
    assert heard_evil.packets == [] and heard_lan.packets == [], (heard_evil.packets,
                                                                  heard_lan.packets)
    # the probes reached the Node over both families (so the silence is its doing) ...
    wait_for(lambda: b1.status()["node_drops"].get("init_bad_mac1", 0)
             > before.get("init_bad_mac1", 0), timeout=15, interval=0.2,
             what=f"b1's Node counting the probes (before: {before})")
    # ... while the introduced peer's address is in the guard's set and its session carries
    # traffic
    guard = b1.host.run(["nft", "list", "table", "inet", f"enclave_guard_{PORT}"]).stdout
    assert str(m1.host.public_ip) in guard, guard
    assert ping(m1.host, b1.overlay_ip, count=3) >= 1


def _unwrapped(frames: list[bytes]) -> list[bytes]:
    """The captured datagrams, and the enclave messages inside the relayed ones."""
    out = [f for f in frames if f]
    out += [f[RELAY_HEADER_SIZE:] for f in frames
            if len(f) > RELAY_HEADER_SIZE and f[0] == MSG_RELAY_DATA]
    return out


def _mapped(agent: Agent) -> tuple[str, int]:
    pm = wait_for(lambda: (agent.status().get("portmap") or {}).get("mapping"), timeout=30,
                  interval=0.5, what=f"{agent.name}'s router granted a mapping")
    host, port = str(pm["external"]).rsplit(":", 1)
    return host, int(port)


def test_replayed_handshake_and_data_get_a_stranger_nothing(world: World) -> None:
    """Everything each agent received while the pair met (INIT, RESPONSE, CONFIRM, CONTROL,
    DATA, relay frames and the messages inside them), sent again by the strangers to b1's
    data port over both families and to m1's mapped port: no answer, and the session stays."""
    lab, _plat, ag = world
    b1, m1 = ag["b1"], ag["m1"]
    if b1.connected(m1.name) is not None:  # capture a whole handshake: start from no session
        b1.intent("remove", m1.name)
        m1.intent("remove", b1.name)
        wait_for(lambda: b1.peer(m1.name) is None and m1.peer(b1.name) is None, timeout=15,
                 interval=0.2, what="session gone")
    with Sniffer(b1.host, set(), keep_udp_to=PORT) as at_b, \
            Sniffer(m1.host, set(), keep_udp_to=PORT) as at_m:
        _connected(world)
        assert ping(m1.host, b1.overlay_ip, count=3) >= 1
    to_b, to_m = _unwrapped(at_b.payloads), _unwrapped(at_m.payloads)
    kinds = {p[0] for p in to_b + to_m}
    assert {MSG_HANDSHAKE_INIT, MSG_HANDSHAKE_RESPONSE, MSG_DATA} <= kinds, sorted(kinds)
    evil, b2 = lab.public_host("evil"), lab.host("b2")
    b_ip, b_ip6 = str(b1.host.ip), str(b1.host.ip6)
    m_host, m_port = _mapped(m1)
    with Sniffer(evil, {b_ip, b_ip6, m_host}) as heard_evil, \
            Sniffer(b2, {b_ip, b_ip6}) as heard_lan:
        for src in (evil, b2):
            for dst in (b_ip, b_ip6):
                _udp(src, dst, PORT, to_b, sockets=2)
        _udp(evil, m_host, m_port, to_m, sockets=2)
        time.sleep(SETTLE)
    assert heard_evil.packets == [] and heard_lan.packets == [], (heard_evil.packets,
                                                                  heard_lan.packets)
    # the replays moved nothing: the session stays where it was and carries traffic
    assert (b1.connected(m1.name) or {}).get("path") == "direct-udp"
    assert ping(m1.host, b1.overlay_ip, count=3) >= 1


def test_the_port_mapped_external_port_gives_a_stranger_nothing(world: World) -> None:
    lab, _plat, ag = world
    m1 = ag["m1"]
    host, port = _mapped(m1)
    assert host == str(lab.site("m").public_ip)
    evil = lab.public_host("evil")
    before = m1.status()["node_drops"].get("init_bad_mac1", 0)
    with Sniffer(evil, {host}) as heard:
        _udp(evil, host, port, _probes(random.Random(9)))
        time.sleep(SETTLE)
    assert heard.packets == [], heard.packets
    # the mapping forwarded the probes to m1's Node, which dropped them
    wait_for(lambda: m1.status()["node_drops"].get("init_bad_mac1", 0) > before, timeout=15,
             interval=0.2, what=f"m1's Node counting the probes (before: {before})")


def test_overlay_listeners_are_not_reachable_from_the_lan(world: World) -> None:
    """The agent's DNS listens on its overlay IP (so may `--metrics`, or a user's service for
    peers). A LAN neighbour that routes the overlay range to the agent's LAN address gets no
    answer from it, over UDP or TCP: the guard table drops what reaches the overlay IP by
    another interface than the TAP or loopback."""
    lab, _plat, ag = world
    b1 = ag["b1"]
    b2 = lab.host("b2")
    b2.run(["ip", "route", "replace", f"{b1.overlay_ip}/32", "via", str(b1.host.ip)],
           check=True)
    # a query for b1's own name (what the DNS answers its peers)
    query = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
             + b"".join(bytes([len(x)]) + x.encode() for x in (b1.name.lower(), "enclave"))
             + b"\x00\x00\x01\x00\x01")
    try:
        with Sniffer(b2, {b1.overlay_ip, str(b1.host.ip)}) as heard:
            _udp(b2, b1.overlay_ip, 53, [query], sockets=2)
            tcp = _tcp(b2, b1.overlay_ip, 53, struct.pack("!H", len(query)) + query)
            time.sleep(SETTLE)
    finally:
        b2.run(["ip", "route", "del", f"{b1.overlay_ip}/32"])
    # before, UDP got the DNS answer and TCP a SYN-ACK and the answer (weak host model)
    assert tcp == "silence" and heard.packets == [], (tcp, heard.packets)
    # the table's overlay rule dropped them, and b1's own queries to its overlay IP still pass
    assert f'ip daddr {b1.overlay_ip} iifname != {{ "lo", "enclave0" }}' in b1.host.run(
        ["nft", "list", "table", "inet", f"enclave_guard_{PORT}"]).stdout


def test_a_spoofed_flood_leaves_no_state_and_no_answer(world: World) -> None:
    """20,000 junk datagrams and 2,000 SYNs to the data port from 16,384 spoofed sources,
    relay-shaped ones among them from the relay's own address: b1 answers none, keeps its file
    descriptors and its fixed set of drop reasons, and its session still carries traffic."""
    lab, _plat, _ag = world
    b1, m1 = _connected(world)
    evil = lab.public_host("evil")
    b_ip = str(b1.host.ip)
    entry = b1.peer(m1.name)
    assert entry is not None and entry["relay"], entry
    relay_host, relay_port_text = str(entry["relay"]).rsplit(":", 1)
    relay_port = int(relay_port_text)
    fds = _agent_fds(b1)
    reasons = set(b1.status()["node_drops"])
    rng = random.Random(11)
    raw = evil.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    spoofed = ipaddress.ip_network("198.18.64.0/18")
    with Sniffer(b1.host, set(), sent_to=spoofed) as heard:
        for i in range(20_000):
            src = f"198.18.{rng.randrange(64, 128)}.{rng.randrange(1, 255)}"
            sport = rng.randrange(1024, 65536)
            if i % 10 == 0:  # from the relay's address: relay-shaped, random channels
                src, sport = relay_host, relay_port
                data = pack_relay_header(rng.choice((MSG_RELAY_CHALLENGE, MSG_RELAY_REGISTERED,
                                                     MSG_RELAY_DATA)), rng.getrandbits(32))
                data += rng.randbytes(rng.randrange(0, 100))
            else:
                data = init_shaped(rng, kinds=(MSG_HANDSHAKE_INIT, MSG_HANDSHAKE_INIT_V1),
                                   max_junk=1400)
            raw.sendto(_ipv4_udp(src, sport, b_ip, PORT, data), (b_ip, 0))
            if i % 10 == 5:
                raw.sendto(_ipv4_syn(src, sport, b_ip, PORT), (b_ip, 0))
            if i % 500 == 0:
                time.sleep(0.05)
        raw.close()
        time.sleep(SETTLE)
    assert heard.packets == [], heard.packets[:20]
    assert _agent_fds(b1) <= fds + 2  # a control or platform socket may have turned over
    assert set(b1.status()["node_drops"]) <= reasons | {"init_bad_mac1", "init_legacy",
                                                         "malformed", "unknown_type",
                                                         "unknown_index"}
    assert ping(m1.host, b1.overlay_ip, count=3) >= 1
    assert b1.proc is not None and b1.proc.poll() is None
