"""Identity binding of a peer's decrypted frames (fp_ident_check, enclave/_fp_ident.pxi),
through its test entry point: one numbered case per row, then every truncation of every
row's frame placed in front of an inaccessible page (a read past the frame would crash).

Peer P is certified as MAC 02:00:00:00:00:01, 100.64.0.1 and fd00::1; V (the victim whose
identity P would like to claim) is 02:00:00:00:00:02, 100.64.0.2. A bridging P (a gateway)
also has the route 192.168.0.0/16.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from enclave import _fastpath as fp
from tests.support.ident_frames import (
    BROADCAST,
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    ETH_QINQ,
    ETH_VLAN,
    IP6_FRAGMENT,
    IP6_HOPOPTS,
    ND_OPT_SLLA,
    ND_OPT_TLLA,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    Guarded,
    arp,
    eth,
    fragment,
    hop_by_hop,
    icmp6_na,
    icmp6_ns,
    ipv4,
    ipv6,
    link_local,
    nd_option,
    solicited_node,
    udp,
)

P_MAC = bytes.fromhex("020000000001")
V_MAC = bytes.fromhex("020000000002")
X_MAC = bytes.fromhex("0a0000000099")  # a host behind a bridging P
P_IP, V_IP = "100.64.0.1", "100.64.0.2"
P_IP6, V_IP6 = "fd00::1", "fd00::2"
P_LL, V_LL, X_LL = link_local(P_MAC), link_local(V_MAC), link_local(X_MAC)
P_STABLE_LL = "fe80::5c1e:22ff:1a9b:7e01"  # what addr_gen_mode stable_privacy would give
ROUTE = "192.168.0.0/16"
ALL_NODES = "ff02::1"

PASS, MAC, IP, ARP = (fp.IDENT_PASS, fp.IDENT_MAC_SPOOFED, fp.IDENT_IP_SPOOFED,
                      fp.IDENT_ARP_SPOOFED)


def from_p(ethertype: int, payload: bytes, *, src: bytes = P_MAC, dst: bytes = BROADCAST,
           tags: tuple[int, ...] = ()) -> bytes:
    return eth(dst, src, ethertype, payload, tags)


def garp(sha: bytes, ip: str) -> bytes:
    return from_p(ETH_ARP, arp(1, sha, ip, bytes(6), ip))


def v4(src: str, proto: int = PROTO_UDP, payload: bytes = udp(5000, 5000, b"x"), **kw: int
       ) -> bytes:
    return from_p(ETH_IPV4, ipv4(src, V_IP, proto, payload, **kw))


def v6(src: str, nh: int = PROTO_UDP, payload: bytes = udp(546, 547, b"x"),
       dst: str = ALL_NODES, *, frame_src: bytes = P_MAC) -> bytes:
    return from_p(ETH_IPV6, ipv6(src, dst, nh, payload), src=frame_src)


def na(target: str, *options: bytes, src: str = P_LL) -> bytes:
    return v6(src, PROTO_ICMPV6, icmp6_na(target, *options))


@dataclass(frozen=True)
class Case:
    n: int
    what: str
    frame: bytes
    verdict: int
    bridging: bool = False


CASES = [
    # Ethernet source (today's rule)
    Case(1, "unicast source = certified MAC, custom EtherType", from_p(0x88B5, b"hello"), PASS),
    Case(2, "another MAC as source", from_p(0x88B5, b"hello", src=V_MAC), MAC),
    Case(3, "group-bit source", from_p(0x88B5, b"x", src=b"\x03" + P_MAC[1:]), MAC),
    Case(4, "shorter than an Ethernet header", from_p(0x88B5, b"")[:13], MAC),
    Case(5, "LLDP (non-IP EtherType) from P: MAC rule only", from_p(0x88CC, bytes(30)), PASS),
    # ARP
    Case(10, "ARP request from P", from_p(ETH_ARP, arp(1, P_MAC, P_IP, bytes(6), V_IP)), PASS),
    Case(11, "ARP reply from P", from_p(ETH_ARP, arp(2, P_MAC, P_IP, V_MAC, V_IP), dst=V_MAC),
         PASS),
    Case(12, "gratuitous ARP for P's own IP", garp(P_MAC, P_IP), PASS),
    Case(13, "gratuitous ARP: V's IP is at P's MAC", garp(P_MAC, V_IP), ARP),
    Case(14, "ARP reply: V's IP is at P's MAC",
         from_p(ETH_ARP, arp(2, P_MAC, V_IP, V_MAC, V_IP), dst=V_MAC), ARP),
    Case(15, "ARP with V's MAC as sender hardware address", garp(V_MAC, P_IP), ARP),
    Case(16, "ARP probe from 0.0.0.0 (RFC 5227)",
         from_p(ETH_ARP, arp(1, P_MAC, "0.0.0.0", bytes(6), P_IP)), PASS),
    Case(17, "ARP of hardware type 6 (not the Ethernet form)",
         from_p(ETH_ARP, arp(1, P_MAC, P_IP, bytes(6), V_IP, htype=6)), ARP),
    Case(18, "ARP cut before the sender protocol address",
         from_p(ETH_ARP, arp(1, P_MAC, P_IP, bytes(6), V_IP))[:14 + 17], ARP),
    Case(19, "ARP one byte short of its 28", garp(P_MAC, P_IP)[:14 + 27], ARP),
    # IPv4
    Case(20, "IPv4 from P's overlay IP", v4(P_IP), PASS),
    Case(21, "IPv4 claiming V's overlay IP", v4(V_IP), IP),
    Case(22, "IPv4 from inside P's gateway route (bridging P)", v4("192.168.3.4"), PASS, True),
    Case(23, "IPv4 from that range without the route", v4("192.168.3.4"), IP),
    Case(24, "IPv4 claiming V's IP from a bridging P", v4(V_IP), IP, True),
    Case(25, "DHCP discover from 0.0.0.0 to UDP 67",
         from_p(ETH_IPV4, ipv4("0.0.0.0", "255.255.255.255", PROTO_UDP, udp(68, 67, bytes(8)))),
         PASS),
    Case(26, "0.0.0.0 to UDP 68", v4("0.0.0.0", PROTO_UDP, udp(67, 68)), IP),
    Case(27, "0.0.0.0 over TCP", v4("0.0.0.0", PROTO_TCP, bytes(20)), IP),
    Case(28, "0.0.0.0 to UDP 67 in a non-first fragment",
         v4("0.0.0.0", PROTO_UDP, udp(68, 67), frag=1), IP),
    Case(29, "0.0.0.0 to UDP 67, cut inside the UDP header",
         v4("0.0.0.0", PROTO_UDP, udp(68, 67))[:14 + 20 + 3], IP),
    Case(30, "IPv4 header one byte short", v4(P_IP)[:14 + 19], IP),
    # IPv6 sources
    Case(40, "IPv6 from P's EUI-64 link-local", v6(P_LL), PASS),
    Case(41, "IPv6 from V's link-local", v6(V_LL), IP),
    Case(42, "IPv6 from a stable-privacy link-local of P", v6(P_STABLE_LL), IP),
    Case(43, "IPv6 from :: (DAD neighbour solicitation)",
         v6("::", PROTO_ICMPV6, icmp6_ns(P_LL), solicited_node(P_LL)), PASS),
    Case(44, "IPv6 from P's certified overlay IPv6", v6(P_IP6), PASS),
    Case(45, "IPv6 from an overlay IPv6 P is not certified for", v6(V_IP6), IP),
    Case(46, "IPv6 header one byte short", v6(P_LL)[:14 + 39], IP),
    Case(47, "non-first fragment from P's link-local",
         v6(P_LL, IP6_FRAGMENT, fragment(PROTO_ICMPV6, bytes(16), offset=2)), PASS),
    Case(48, "neighbour solicitation from P with P's link-layer address",
         v6(P_LL, PROTO_ICMPV6, icmp6_ns(V_LL, nd_option(ND_OPT_SLLA, P_MAC)),
            solicited_node(V_LL)), PASS),
    # Neighbour advertisements
    Case(50, "NA for P's link-local with P's MAC", na(P_LL, nd_option(ND_OPT_TLLA, P_MAC)),
         PASS),
    Case(51, "NA for P's overlay IPv6", na(P_IP6, nd_option(ND_OPT_TLLA, P_MAC)), PASS),
    Case(52, "NA claiming V's link-local", na(V_LL, nd_option(ND_OPT_TLLA, P_MAC)), IP),
    Case(53, "NA claiming V's overlay IPv6", na(V_IP6), IP),
    Case(54, "NA claiming V's link-local behind a hop-by-hop header",
         v6(P_LL, IP6_HOPOPTS, hop_by_hop(PROTO_ICMPV6, icmp6_na(V_LL))), IP),
    Case(55, "NA claiming V's link-local in a first fragment",
         v6(P_LL, IP6_FRAGMENT, fragment(PROTO_ICMPV6, icmp6_na(V_LL), more=True)), IP),
    Case(56, "NA for P's address pointing at V's MAC",
         na(P_LL, nd_option(ND_OPT_TLLA, V_MAC)), IP),
    Case(57, "NA for ::", na("::"), IP),
    Case(58, "NA with an option of length 0", na(P_LL, b"\x02\x00" + bytes(6)), IP),
    Case(59, "NA cut inside its target", na(P_LL)[:14 + 40 + 20], IP),
    Case(60, "NA whose payload length runs past the frame",
         from_p(ETH_IPV6, ipv6(P_LL, ALL_NODES, PROTO_ICMPV6, icmp6_na(P_LL), plen=200)), IP),
    # VLAN tags: the same rules inside them
    Case(70, "802.1Q-tagged IPv4 from P", from_p(ETH_IPV4, ipv4(P_IP, V_IP, PROTO_UDP, udp(1, 2)),
                                                  tags=(ETH_VLAN,)), PASS),
    Case(71, "802.1Q-tagged IPv4 claiming V's IP",
         from_p(ETH_IPV4, ipv4(V_IP, P_IP, PROTO_UDP, udp(1, 2)), tags=(ETH_VLAN,)), IP),
    Case(72, "802.1ad + 802.1Q-tagged gratuitous ARP for V's IP",
         from_p(ETH_ARP, arp(1, P_MAC, V_IP, bytes(6), V_IP), tags=(ETH_QINQ, ETH_VLAN)), ARP),
    Case(73, "802.1Q-tagged NA claiming V's link-local",
         from_p(ETH_IPV6, ipv6(P_LL, ALL_NODES, PROTO_ICMPV6, icmp6_na(V_LL)),
                tags=(ETH_VLAN,)), IP),
    Case(74, "a VLAN tag cut short", from_p(ETH_IPV4, b"", tags=(ETH_VLAN,))[:16], IP),
    Case(75, "802.1Q-tagged custom EtherType", from_p(0x88B5, b"x", tags=(ETH_VLAN,)), PASS),
    # a bridging P (gateway): any unicast source MAC, the IP rules with its routes
    Case(80, "bridging P: a LAN host's MAC and address",
         from_p(ETH_IPV4, ipv4("192.168.3.4", V_IP, PROTO_UDP, udp(1, 2)), src=X_MAC), PASS, True),
    Case(81, "bridging P: a LAN host's ARP for its routed address",
         from_p(ETH_ARP, arp(1, X_MAC, "192.168.3.4", bytes(6), V_IP), src=X_MAC), PASS, True),
    Case(82, "bridging P: ARP for V's IP", garp(P_MAC, V_IP), ARP, True),
    Case(83, "bridging P: ARP whose sender MAC is neither P's nor the frame's",
         from_p(ETH_ARP, arp(1, V_MAC, "192.168.3.4", bytes(6), V_IP), src=X_MAC), ARP, True),
    Case(84, "bridging P: IPv6 from the link-local of the frame's source MAC",
         v6(X_LL, frame_src=X_MAC), PASS, True),
    Case(85, "bridging P: IPv6 from V's link-local", v6(V_LL, frame_src=X_MAC), IP, True),
]


def check(case: Case, frame: bytes | memoryview | None = None) -> int:
    return fp.ident_check(case.frame if frame is None else frame, peer_mac=P_MAC,
                          bridging=case.bridging, overlay_ip4=P_IP, overlay_ip6=[P_IP6],
                          routes=[ROUTE] if case.bridging else [])


def test_case_numbers_are_unique() -> None:
    numbers = [c.n for c in CASES]
    assert len(numbers) == len(set(numbers))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.n}-{c.what}" for c in CASES])
def test_verdict(case: Case) -> None:
    got = check(case)
    names = fp.IDENT_VERDICTS
    assert got == case.verdict, f"{case.n} ({case.what}): {names[got]}, not {names[case.verdict]}"


def test_no_certified_address_allows_only_unspecified_sources() -> None:
    """A peer whose certificate names no overlay IPv4 may still probe (ARP from 0.0.0.0,
    DHCP discover) and use its link-local address, nothing else."""
    def bare(frame: bytes) -> int:
        return fp.ident_check(frame, peer_mac=P_MAC)
    assert bare(v4(P_IP)) == IP
    assert bare(garp(P_MAC, P_IP)) == ARP
    assert bare(from_p(ETH_ARP, arp(1, P_MAC, "0.0.0.0", bytes(6), P_IP))) == PASS
    assert bare(v6(P_LL)) == PASS
    assert bare(v6(P_IP6)) == IP


def test_a_default_route_certifies_every_ipv4_source() -> None:
    """An exit gateway's 0.0.0.0/0 covers any source, V's included (its certificate says so)."""
    assert fp.ident_check(v4(V_IP), peer_mac=P_MAC, bridging=True, overlay_ip4=P_IP,
                          routes=["0.0.0.0/0"]) == PASS


@pytest.mark.parametrize("case", CASES, ids=[f"{c.n}" for c in CASES])
def test_every_truncation_stays_inside_the_frame(case: Case) -> None:
    """Every prefix of the frame, ending right before an inaccessible page: a verdict, never a
    read past the end (that would be a SIGSEGV here); an IP/ARP frame cut inside the fields
    its rule reads is never passed as if it were whole."""
    guard = Guarded()
    for n in range(len(case.frame) + 1):
        got = check(case, guard.place(case.frame[:n]))
        assert got in fp.IDENT_VERDICTS
        if n < 14:
            assert got == MAC


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError):
        fp.ident_check(b"", peer_mac=b"\x02\x00")
    with pytest.raises(ValueError):
        fp.ident_check(b"", peer_mac=P_MAC, overlay_ip4="not an address")
