"""Networks that drop UDP: real agents and a real platform in a lab whose routers drop UDP.

    u1  port-restricted NAT, UDP blocked ---- direct-tcp ----  p1  port-restricted NAT
    u1                                   ---- relay-tls  ----  s1  symmetric NAT, UDP blocked
                       (relay over TLS: the platform's HTTPS port, /v1/relay)

Both pairs carry iperf3 traffic.  A revoked system's relay-over-TLS path is cut.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from enclave.netlab import Lab, NatType, Site, Topology
from tests.support.iperf import NEEDS_IPERF3, iperf3_received
from tests.support.lab import Agent, intents_both_ways, platform_lab, start_all
from tests.support.peer_paths import connected_on
from tests.support.platform import Platform
from tests.support.traffic import ping
from tests.support.wait import wait_for

pytestmark = [
    pytest.mark.netlab,
    pytest.mark.root,
    NEEDS_IPERF3,
]
IPERF_PORT = 5299
SECONDS = 3

World = tuple[Lab, Platform, dict[str, Agent]]


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    topo = Topology(sites=[Site("u", nat=NatType.PORT_RESTRICTED, block_udp=True),
                           Site("p", nat=NatType.PORT_RESTRICTED),
                           Site("s", nat=NatType.SYMMETRIC, block_udp=True)],
                    public_hosts=["plat"])
    with platform_lab(topo, tmp_path_factory.mktemp("relaytls"), ["u1", "p1", "s1"]) as w:
        start_all(w[2].values())
        yield w


def iperf(a: Agent, b: Agent) -> int:
    """Bytes one iperf3 TCP stream a -> b over the overlay delivered in SECONDS."""
    return iperf3_received(a.host, b.host, b.overlay_ip, IPERF_PORT, SECONDS)


def test_udp_blocked_site_reaches_port_restricted_peer_over_tcp(world: World) -> None:
    _lab, _plat, ag = world
    u, p = ag["u1"], ag["p1"]
    intents_both_ways(u, p)
    connected_on(u, p, "direct-tcp", 30)
    connected_on(p, u, "direct-tcp", 10)
    assert iperf(u, p) > 0


def test_udp_blocked_pair_relays_over_tls(world: World) -> None:
    _lab, _plat, ag = world
    u, s = ag["u1"], ag["s1"]
    intents_both_ways(u, s)
    pu = connected_on(u, s, "relay-tls", 40)
    connected_on(s, u, "relay-tls", 10)
    assert pu["relay_tls_registered"] and not pu["relay_registered"], pu
    assert iperf(s, u) > 0
    assert ping(u.host, s.overlay_ip, count=3)


def test_revoked_system_is_cut_from_the_tls_relay(world: World) -> None:
    _lab, plat, ag = world
    u, s = ag["u1"], ag["s1"]
    if u.connected(s.name) is None:
        intents_both_ways(u, s)
    connected_on(u, s, "relay-tls", 40)
    res = plat.cli("systems", "revoke", s.name)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: "relay over TLS: cut" in plat.log(), timeout=30, interval=0.5,
             what="the platform cut the revoked system's relay WebSocket")
    wait_for(lambda: (p := s.peer(u.name)) is None or not p["relay_tls_registered"],
             timeout=30, interval=0.5, what="s1 no longer registered on the relay over TLS")
    wait_for(lambda: u.connected(s.name) is None, timeout=30, interval=0.5,
             what="u1's relayed session with the revoked s1 ended")
    assert not ping(u.host, s.overlay_ip, count=2, timeout=1.0)
