"""enclave.policy.gateway: routes/ACL parsing, offers/grants JSON, nft ruleset text, failover."""

from __future__ import annotations

import ipaddress

import pytest

from enclave.policy.gateway import (
    ACL_ANY,
    ACL_PENDING_MARK,
    GRANT_MARK,
    MAX_PEERS,
    AclEntry,
    GatewayConfigError,
    GatewayGrant,
    GatewayOffer,
    LocalView,
    PeerView,
    choose_active,
    grants_from_json,
    is_active,
    merge_counters,
    parse_acl,
    parse_counters,
    parse_routes,
    route_changes,
    routes_within,
    ruleset,
    teardown_script,
)

N = ipaddress.IPv4Network
A = ipaddress.IPv4Address
LAN = N("198.19.50.0/24")


def gw(name: str, ip: str, routes: str = "198.19.50.0/24", *, cert: str = "198.19.0.0/16",
       up: bool = True, prio: int = 100, mac_last: int = 9) -> PeerView:
    return PeerView(name, bytes([2, 0, 0, 0, 0, mac_last]), A(ip), cert_routes=parse_routes(cert),
                    offer=GatewayOffer(parse_routes(routes), priority=prio), up=up)


def test_parse_routes_sorted_dedup() -> None:
    assert parse_routes("10.2.0.0/16, 10.1.0.0/16,10.2.0.0/16") == (N("10.1.0.0/16"),
                                                                     N("10.2.0.0/16"))
    assert parse_routes(["198.19.50.0/24"]) == (LAN,)


@pytest.mark.parametrize("bad", ["", "0.0.0.0/0", "10.0.0.1/24", "127.0.0.0/8", "224.0.0.0/4",
                                 "169.254.0.0/16", "300.1.1.0/24", "fe80::/64", "10.0.0.0/33",
                                 "a,b"])
def test_parse_routes_rejects(bad: str) -> None:
    with pytest.raises(GatewayConfigError):
        parse_routes(bad)


def test_parse_routes_limit() -> None:
    with pytest.raises(GatewayConfigError):
        parse_routes([f"10.{i}.0.0/16" for i in range(65)])


def test_parse_acl() -> None:
    assert parse_acl(None) == ACL_ANY
    assert parse_acl("") == ACL_ANY
    assert parse_acl("tcp:22,udp:53,any") == ACL_ANY  # any absorbs the rest
    acl = parse_acl("udp:53, tcp:8000-8100,icmp,TCP:22")
    assert [str(a) for a in acl] == ["icmp", "tcp:22", "tcp:8000-8100", "udp:53"]
    assert AclEntry("tcp", 8000, 8100).nft() == "tcp dport 8000-8100"
    assert AclEntry("icmp").nft() == "ip protocol icmp"
    assert AclEntry("any").nft() == ""


@pytest.mark.parametrize("bad", ["tcp", "tcp:", "tcp:0", "tcp:70000", "udp:9-3", "sctp:1",
                                 "tcp:a", "tcp:1-", "icmp:3"])
def test_parse_acl_rejects(bad: str) -> None:
    with pytest.raises(GatewayConfigError):
        parse_acl(bad)


def test_routes_within() -> None:
    assert routes_within(parse_routes("198.19.50.0/24,10.0.0.0/8"), [N("198.19.0.0/16")]) == (LAN,)
    assert routes_within([N("198.19.0.0/16")], [LAN]) == ()


def test_offer_grant_json_round_trip_and_negatives() -> None:
    offer = GatewayOffer(parse_routes("198.19.50.0/24"), nat=False, priority=7)
    assert GatewayOffer.from_json(offer.to_json()) == offer
    grant = GatewayGrant((LAN,), parse_acl("tcp:22"), "ops-lan")
    assert grants_from_json([grant.to_json()]) == (grant,)
    assert grants_from_json(None) == ()
    for bad in ([], {"routes": "x"}, {"routes": ["1.2.3.0/24"], "nat": "yes"},
                {"routes": ["1.2.3.0/24"], "priority": -1}, {"routes": ["0.0.0.0/0"]}):
        with pytest.raises(GatewayConfigError):
            GatewayOffer.from_json(bad)
    for bad_g in ({"routes": ["1.2.3.0/24"], "acl": "any"}, {"routes": ["1.2.3.0/24"],
                  "acl": ["tcp:0"]}, {"routes": ["1.2.3.0/24"], "policy": 3}, "x"):
        with pytest.raises(GatewayConfigError):
            grants_from_json([bad_g])


def test_peer_routes_are_offered_and_certified() -> None:
    p = gw("G1", "100.64.0.9", "198.19.50.0/24,10.9.0.0/16", cert="198.19.50.0/24")
    assert p.routes == (LAN,)  # 10.9/16 offered but not in the certificate: ignored
    plain = PeerView("C1", b"\x02" * 6, A("100.64.0.3"))
    assert plain.routes == ()
    with pytest.raises(GatewayConfigError):
        PeerView("X", b"\x02", A("100.64.0.4"))


def test_ruleset_client_side() -> None:
    local = LocalView("enclave0", ipaddress.IPv4Interface("100.64.0.5/10"))
    peers = [gw("G1", "100.64.0.9"), PeerView("C2", bytes([2, 0, 0, 0, 0, 3]), A("100.64.0.3"))]
    assert is_active(local, peers)
    text = ruleset(local, peers)
    assert "02:00:00:00:00:09 : jump p_G1" in text and "02:00:00:00:00:03 : jump p_C2" in text
    assert "ip saddr != { 100.64.0.9, 198.19.50.0/24 } counter name spoofed_src_G1 drop" in text
    assert "ip saddr != { 100.64.0.3 } counter name spoofed_src_C2 drop" in text
    assert "masquerade" not in text and "table ip enclave_gw {\n" not in text  # not a gateway
    assert "mark set" not in text  # nothing is granted on a client
    assert not is_active(local, peers[1:])


def test_ruleset_gateway_side_grants_acl_nat() -> None:
    local = LocalView("enclave0", ipaddress.IPv4Interface("100.64.0.9/10"),
                      parse_routes("198.19.50.0/24,198.19.51.0/24"), nat=True)
    grant = GatewayGrant((LAN, N("10.0.0.0/8")), parse_acl("tcp:22,icmp"), "ops")
    client = PeerView("C1", bytes([2, 0, 0, 0, 0, 1]), A("100.64.0.5"), grants=(grant,))
    text = ruleset(local, [client])
    # only the served part of the grant, once per ACL entry, then the ACL drop, then the rest
    assert "ip daddr { 198.19.50.0/24 } tcp dport 22 counter name routed_C1" in text
    assert "ip daddr { 198.19.50.0/24 } ip protocol icmp counter name routed_C1" in text
    assert "10.0.0.0" not in text
    lines = text.splitlines()
    idx = [i for i, ln in enumerate(lines) if "meta mark set 0x45500001 accept" in ln]
    route_idx = [i for i, ln in enumerate(lines) if "route_denied_C1 drop" in ln]
    assert idx and route_idx and idx[0] < route_idx[0]
    assert "ip daddr { 198.19.50.0/23 } counter name route_denied_C1 drop" in text  # merged
    assert 'oifname != "enclave0" ip saddr 100.64.0.0/10 ip daddr { 198.19.50.0/23 } masquerade' \
        in text
    routed = LocalView("enclave0", local.overlay, local.served, nat=False)
    text2 = ruleset(routed, [client])
    assert "masquerade" not in text2 and "forward_denied drop" in text2


def _tables(text: str) -> tuple[str, str]:
    """(the netdev table's body, the ip table's body) of a ruleset."""
    netdev = text[text.index("table netdev enclave_gw {\n"):text.index("table ip enclave_gw {}")]
    ip = text[text.index("table ip enclave_gw {\n"):] if "table ip enclave_gw {\n" in text else ""
    return netdev, ip


def test_ruleset_stateful_acl_pending_mark_decided_after_conntrack() -> None:
    local = LocalView("enclave0", ipaddress.IPv4Interface("100.64.0.9/10"), (LAN,), nat=False)
    narrow = GatewayGrant((LAN,), parse_acl("tcp:22"), "ops")
    c1 = PeerView("C1", bytes([2, 0, 0, 0, 0, 1]), A("100.64.0.5"), grants=(narrow, narrow))
    c2 = PeerView("C-2", bytes([2, 0, 0, 0, 0, 2]), A("100.64.0.6"), grants=(narrow,))
    wide = PeerView("C3", bytes([2, 0, 0, 0, 0, 3]), A("100.64.0.7"),
                    grants=(GatewayGrant((LAN,)),))
    netdev, ip = _tables(ruleset(local, [wide, c2, c1]))
    # netdev (before conntrack): what the ACL did not match is marked per peer, not dropped
    m1, m2 = ACL_PENDING_MARK | 2, ACL_PENDING_MARK | 1  # index in the name-sorted peer list
    assert f"ip daddr {{ 198.19.50.0/24 }} meta mark set {m1:#x} accept" in netdev
    assert f"ip daddr {{ 198.19.50.0/24 }} meta mark set {m2:#x} accept" in netdev
    assert "acl_denied" not in netdev and "drop" in netdev
    assert f"tcp dport 22 counter name routed_C1 meta mark set {GRANT_MARK:#x} accept" in netdev
    assert netdev.count(f"{m1:#x}") == 2  # once per grant
    # ACL any: everything to the routes is granted, nothing is left pending
    assert "counter name routed_C3 meta mark set" in netdev
    assert f"{ACL_PENDING_MARK | 3:#x}" not in netdev + ip
    # ip (after conntrack): replies pass with the grant mark, new flows are acl_denied
    assert f'iifname "enclave0" meta mark vmap {{ {m2:#x} : jump a_C_2, {m1:#x} : jump a_C1 }}' \
        in ip
    assert "type filter hook prerouting priority filter;" in ip
    for tag in ("C1", "C_2"):
        chain = ip[ip.index(f"chain a_{tag} {{"):]
        rules = chain[:chain.index("  }")].splitlines()[1:]
        assert [r.strip() for r in rules] == [
            f"ct state established,related counter name routed_{tag} "
            f"meta mark set {GRANT_MARK:#x} accept",
            f"counter name acl_denied_{tag} drop"]
        assert f"counter acl_denied_{tag} {{}}" in ip and f"counter routed_{tag} {{}}" in ip
    assert "a_C3" not in ip and "acl_denied_C3" not in ip
    assert f'meta mark != {GRANT_MARK:#x} counter name forward_denied drop' in ip
    # nobody pending (ACL any only): no prerouting chain at all
    _netdev, ip_any = _tables(ruleset(local, [wide]))
    assert "prerouting" not in ip_any and "forward_denied drop" in ip_any


def test_ruleset_peer_limit() -> None:
    local = LocalView("enclave0", ipaddress.IPv4Interface("100.64.0.9/10"), (LAN,))
    many = [PeerView(f"P{i}", b"\x02" * 6, A("100.64.0.5")) for i in range(MAX_PEERS + 1)]
    with pytest.raises(GatewayConfigError):
        ruleset(local, many)


def test_ruleset_replaces_atomically_and_rejects_bad_iface() -> None:
    text = ruleset(LocalView("enclave0", ipaddress.IPv4Interface("100.64.0.9/10")), [])
    assert text.startswith("table netdev enclave_gw {}\ndelete table netdev enclave_gw\n")
    assert "vmap" not in text
    assert "delete table ip enclave_gw" in teardown_script()
    with pytest.raises(GatewayConfigError):
        LocalView('en"; flush ruleset', ipaddress.IPv4Interface("100.64.0.9/10"))


def test_parse_counters() -> None:
    listing = {"nftables": [{"metainfo": {}},
                            {"counter": {"name": "spoofed_src_G1", "packets": 3}},
                            {"counter": {"name": "routed_C_1", "packets": 9}},
                            {"counter": {"name": "acl_denied_C_1", "packets": 2}},
                            {"counter": {"name": "forward_denied", "packets": 4}},
                            {"counter": "junk"}, "junk"]}
    assert parse_counters(listing) == {"G1": {"spoofed_src": 3},
                                       "C_1": {"routed": 9, "acl_denied": 2},
                                       "": {"forward_denied": 4}}
    assert parse_counters({}) == {}
    netdev = parse_counters({"nftables": [{"counter": {"name": "routed_C1", "packets": 5}},
                                          {"counter": {"name": "spoofed_src_C1", "packets": 1}}]})
    ip = parse_counters({"nftables": [{"counter": {"name": "routed_C1", "packets": 2}},
                                      {"counter": {"name": "acl_denied_C1", "packets": 7}},
                                      {"counter": {"name": "forward_denied", "packets": 1}}]})
    assert merge_counters(netdev, ip) == {"C1": {"routed": 7, "spoofed_src": 1, "acl_denied": 7},
                                          "": {"forward_denied": 1}}
    assert merge_counters() == {}


def test_failover_active_passive() -> None:
    g1, g2 = gw("G1", "100.64.0.9", prio=10), gw("G2", "100.64.0.10", prio=20, mac_last=10)
    plan = choose_active([g1, g2], {})
    assert plan.active == {LAN: "G1"} and plan.via == {LAN: A("100.64.0.9")}
    down = gw("G1", "100.64.0.9", prio=10, up=False)
    plan = choose_active([down, g2], plan.active)
    assert plan.active == {LAN: "G2"}
    # G1 returns: no pre-emption, G2 keeps the subnet while it is up
    assert choose_active([g1, g2], plan.active).active == {LAN: "G2"}
    # nobody up: no route
    assert choose_active([down], {LAN: "G1"}).active == {}
    # equal priority: by name, deterministic
    assert choose_active([gw("GB", "100.64.0.2"), gw("GA", "100.64.0.3")], {}).active == \
        {LAN: "GA"}


def test_route_changes() -> None:
    old = {LAN: A("100.64.0.9"), N("10.1.0.0/16"): A("100.64.0.9")}
    new = {LAN: A("100.64.0.10"), N("10.2.0.0/16"): A("100.64.0.9")}
    put, gone = route_changes(old, new)
    assert put == [(N("10.2.0.0/16"), A("100.64.0.9")), (LAN, A("100.64.0.10"))]
    assert gone == [N("10.1.0.0/16")]
    assert route_changes(new, new) == ([], [])


def test_probe_tracker() -> None:
    from enclave.policy.gateway import ProbeTracker

    t = ProbeTracker(misses=3)
    assert t.alive("G1")
    t.sent("G1")
    t.sent("G1")
    assert t.alive("G1")
    t.sent("G1")
    assert not t.alive("G1")
    t.replied("G1")
    assert t.alive("G1")
    t.sent("G1")
    t.forget("G1")
    assert t.outstanding == {}
