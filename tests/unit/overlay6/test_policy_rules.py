"""The kernel rules the agent renders keep the overlay IPv6 to what the IPv4 rules allow:
the guard table's overlay rule covers the overlay IPv6 too, and a gateway's per-peer ingress
chain takes a peer's IPv6 (not only its IPv4) and lets it reach overlay, link-local and
multicast destinations only (anything else: not_routed)."""

from __future__ import annotations

import ipaddress

from enclave.policy.gateway import GatewayGrant, LocalView, PeerView, parse_routes, ruleset
from enclave.policy.guard import Overlay
from enclave.policy.guard import ruleset as guard_ruleset

V6 = ipaddress.IPv6Address("fd7f:75e3:1e7e::6440:c07")
NET6 = ipaddress.IPv6Network("fd7f:75e3:1e7e::/64")


def test_guard_drops_the_overlay_ipv6_from_any_other_interface() -> None:
    text = guard_ruleset(51820, set(), Overlay("enclave0", ipaddress.IPv4Address("100.64.12.7"),
                                               V6))
    lines = [x.strip() for x in text.splitlines()]
    v4 = 'ip daddr 100.64.12.7 iifname != { "lo", "enclave0" } counter drop'
    v6 = f'ip6 daddr {V6} iifname != {{ "lo", "enclave0" }} counter drop'
    assert lines.index(v6) == lines.index(v4) + 1
    assert "ip6 daddr" not in guard_ruleset(
        51820, set(), Overlay("enclave0", ipaddress.IPv4Address("100.64.12.7")))


def test_gateway_chain_takes_ipv6_and_keeps_it_inside_the_overlay() -> None:
    served = parse_routes("198.19.2.0/24")
    local = LocalView("enclave0", ipaddress.IPv4Interface("100.64.0.1/10"), served, True, NET6)
    peer = PeerView("PEER", bytes.fromhex("020000000005"), ipaddress.IPv4Address("100.64.0.5"),
                    grants=(GatewayGrant(served),))
    lines = [x.strip() for x in ruleset(local, [peer]).splitlines()]
    assert "meta protocol { ip, ip6 } ether saddr vmap { 02:00:00:00:00:05 : jump p_PEER }" in lines
    accept6 = f"ip6 daddr {{ {NET6}, fe80::/10, ff00::/8 }} accept"
    assert lines.index(accept6) < lines.index("counter name not_routed_PEER drop")
    # without an overlay IPv6: link-local and multicast only
    bare = ruleset(LocalView("enclave0", ipaddress.IPv4Interface("100.64.0.1/10"), served),
                   [peer])
    assert "ip6 daddr { fe80::/10, ff00::/8 } accept" in bare
