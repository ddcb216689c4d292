"""Which gateway carries a subnet, over time: sticky to its holder (RoutePlan.held through
choose_active), and liveness is the prober's to say, not an introduction's (GatewayManager
state, no kernel I/O)."""

from __future__ import annotations

import dataclasses
import ipaddress

from enclave.agent.gateway import GatewayManager
from enclave.policy.gateway import GatewayOffer, LocalView, PeerView, choose_active, parse_routes

LAN = ipaddress.IPv4Network("198.19.50.0/24")


def gw(name: str, ip: str, *, up: bool = True, routes: str = "198.19.50.0/24",
       prio: int = 100) -> PeerView:
    return PeerView(name, bytes([2, 0, 0, 0, 0, int(ip.rsplit(".", 1)[1])]),
                    ipaddress.IPv4Address(ip), cert_routes=parse_routes("198.19.0.0/16"),
                    offer=GatewayOffer(parse_routes(routes), priority=prio), up=up)


def test_holder_kept_after_a_moment_when_no_gateway_answered() -> None:
    g1, g2 = gw("G1", "100.64.0.2"), gw("G2", "100.64.0.3")
    held = {LAN: "G2"}  # G2 took over from G1 earlier
    assert choose_active([g1, g2], held).active == {LAN: "G2"}
    # neither answers (a stall on the client's side, say): no route, but G2 is remembered
    silent = choose_active([dataclasses.replace(g1, up=False),
                            dataclasses.replace(g2, up=False)], held)
    assert silent.active == {} and silent.via == {}
    assert silent.held == {LAN: "G2"}
    # both answer again: G2 keeps the subnet (before: G1, the lower name — a flip)
    back = choose_active([g1, g2], silent.held)
    assert back.active == {LAN: "G2"} and back.held == {LAN: "G2"}
    # only G1 answers: the subnet moves to it (the holder is not answering)
    moved = choose_active([g1, dataclasses.replace(g2, up=False)], silent.held)
    assert moved.active == {LAN: "G1"} and moved.held == {LAN: "G1"}


def test_held_forgets_a_holder_that_no_longer_offers_the_subnet() -> None:
    g1 = gw("G1", "100.64.0.2", up=False)
    assert choose_active([g1], {LAN: "G2"}).held == {}  # G2 is gone
    other = gw("G2", "100.64.0.3", up=False, routes="198.19.60.0/24")
    assert choose_active([g1, other], {LAN: "G2"}).held == {}  # G2 serves another subnet now
    first = choose_active([gw("GB", "100.64.0.3"), gw("GA", "100.64.0.2")], {})
    assert first.active == first.held == {LAN: "GA"}  # no holder: (priority, name)


def _manager() -> GatewayManager:
    return GatewayManager(LocalView("enclave0", ipaddress.IPv4Interface("100.64.0.1/10")))


def test_reintroduction_keeps_the_liveness_the_prober_found() -> None:
    m = _manager()
    m.upsert_peer(gw("G1", "100.64.0.2", up=False))  # introduced: not heard yet
    assert m.snapshot()[0].up is False
    assert m.set_up("G1", True) and not m.set_up("G1", True)
    # introduced again (renewed certificate, new candidates): still up, not reset
    m.upsert_peer(gw("G1", "100.64.0.2", up=False, prio=50))
    (p,) = m.snapshot()
    assert p.up is True and p.offer is not None and p.offer.priority == 50
    # found silent by the prober, then introduced again: stays down (before: up again, so a
    # hung gateway was a standby and took traffic it could not carry)
    assert m.set_up("G1", False)
    m.upsert_peer(gw("G1", "100.64.0.2", up=True))
    assert m.snapshot()[0].up is False


def test_a_peer_newly_offering_routes_takes_the_given_liveness() -> None:
    m = _manager()
    plain = PeerView("P", bytes([2, 0, 0, 0, 0, 7]), ipaddress.IPv4Address("100.64.0.7"))
    m.upsert_peer(plain)
    assert m.snapshot()[0].up is True and plain.routes == ()
    m.upsert_peer(gw("P", "100.64.0.7", up=False))  # now our gateway: not heard yet
    assert m.snapshot()[0].up is False
    m.remove_peer("P")
    assert m.snapshot() == [] and not m.set_up("P", True)
