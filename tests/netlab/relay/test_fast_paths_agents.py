"""Real agents and a real platform: DATA over relay-udp, relay-tls and direct-tcp is carried by
the compiled loops (enclave/_fp_relaypath.pxi), not by Python one datagram at a time.

    y1  symmetric NAT  ---------- relay-udp (platform relay, UDP) ----------  z1  symmetric NAT
    u1  port-restricted, UDP blocked  ---- direct-tcp ----  p1  port-restricted NAT
    u1                                ---- relay-tls  ----  s1  symmetric NAT, UDP blocked

relay-udp: every sealed frame for the peer went to the relay from the tx loop with the relay
header (tx_relayed == tx_frames, nothing handed to Python) and relayed DATA was opened by the
rx loop (rx_relayed). direct-tcp / relay-tls: the tx loop hands Python batches (fewer punt
messages than frames) and Python hands received DATA back in batches (fewer INJECT messages
than packets). iperf3 traffic crosses each pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from enclave.netlab import Lab, NatType, Site, Topology
from tests.support.iperf import NEEDS_IPERF3, iperf3_received
from tests.support.lab import Agent, intents_both_ways, platform_lab, start_all
from tests.support.peer_paths import connected_on
from tests.support.platform import Platform

pytestmark = [
    pytest.mark.netlab,
    pytest.mark.root,
    NEEDS_IPERF3,
]
IPERF_PORT = 5298
SECONDS = 2

World = tuple[Lab, Platform, dict[str, Agent]]


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    topo = Topology(sites=[Site("y", nat=NatType.SYMMETRIC),
                           Site("z", nat=NatType.SYMMETRIC),
                           Site("u", nat=NatType.PORT_RESTRICTED, block_udp=True),
                           Site("p", nat=NatType.PORT_RESTRICTED),
                           Site("s", nat=NatType.SYMMETRIC, block_udp=True)],
                    public_hosts=["plat"])
    with platform_lab(topo, tmp_path_factory.mktemp("fastpaths"),
                      ["y1", "z1", "u1", "p1", "s1"]) as w:
        start_all(w[2].values())
        yield w


def iperf(a: Agent, b: Agent) -> int:
    """Bytes one iperf3 TCP stream a -> b over the overlay delivered in SECONDS."""
    return iperf3_received(a.host, b.host, b.overlay_ip, IPERF_PORT, SECONDS)


def peer_dp(a: Agent, b: Agent) -> dict[str, int]:
    p = a.connected(b.name)
    assert p is not None and p.get("dataplane"), p
    dp: dict[str, int] = p["dataplane"]
    return dp


def global_dp(a: Agent) -> dict[str, Any]:
    counters: dict[str, Any] = a.status()["dataplane"]["counters"]
    return counters


def test_relay_udp_frames_cross_in_the_loops(world: World) -> None:
    _lab, _plat, ag = world
    y, z = ag["y1"], ag["z1"]
    intents_both_ways(y, z)
    connected_on(y, z, "relay-udp", 40)
    connected_on(z, y, "relay-udp", 10)
    assert iperf(y, z) > 0
    ty, rz = peer_dp(y, z), peer_dp(z, y)
    assert ty["tx_frames"] > 1000 and ty["tx_relayed"] >= ty["tx_frames"] - 1, ty  # all of them
    assert ty["tx_via_python"] == 0, ty
    assert rz["rx_relayed"] > 1000 and rz["rx_relay_forged"] == 0, rz
    for a in (y, z):
        g = global_dp(a)
        assert g["tx_punt_batches"] == 0, g  # nothing of this pair's DATA through Python


@pytest.mark.parametrize(("a", "b", "path"), [("u1", "p1", "direct-tcp"),
                                              ("s1", "u1", "relay-tls")])
def test_tcp_and_tls_paths_hand_python_batches(world: World, a: str, b: str, path: str) -> None:
    _lab, _plat, ag = world
    x, y = ag[a], ag[b]
    if x.connected(y.name) is None:
        intents_both_ways(x, y)
    connected_on(x, y, path, 40)
    connected_on(y, x, path, 10)
    before_x, before_y = global_dp(x), global_dp(y)
    assert iperf(x, y) > 0
    tx, gx, gy = peer_dp(x, y), global_dp(x), global_dp(y)
    batches = gx["tx_punt_batches"] - before_x["tx_punt_batches"]
    assert tx["tx_via_python"] > 1000 and tx["tx_relayed"] == 0, tx
    assert 0 < batches < tx["tx_via_python"] // 4, (batches, tx)  # many frames per batch
    msgs = gy["rx_inject_msgs"] - before_y["rx_inject_msgs"]
    packets = gy["rx_injected"] - before_y["rx_injected"]
    assert 0 < msgs < packets // 4, (msgs, packets)
    assert gy["rx_malformed"] == before_y["rx_malformed"], gy
