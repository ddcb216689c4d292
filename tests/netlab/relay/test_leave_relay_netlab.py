"""Leaving the relay: a pair relayed over TLS because both sites drop UDP moves to direct UDP
once the block is lifted, without a session drop.

    ws1  symmetric NAT, UDP blocked  ---- relay-tls ---->  wf1  full-cone NAT, UDP blocked
    (TCP cannot punch: the symmetric side's TCP mapping is per destination)
    block lifted on both routers  ---->  direct-udp (symmetric -> full-cone punches)

The session is the same one throughout (connected_at unchanged, never seen down while polled),
`path_changed_at` is set, and a continuous ping keeps being answered after the move.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from enclave.netlab import Lab, NatType, Site, Topology
from tests.support.lab import Agent, intents_both_ways, platform_lab, start_all
from tests.support.peer_paths import connected_on
from tests.support.traffic import ping
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]


@pytest.fixture(scope="module")
def pair(netlab_required: None, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[Lab, Agent, Agent]]:
    topo = Topology(sites=[Site("ws", nat=NatType.SYMMETRIC, block_udp=True),
                           Site("wf", nat=NatType.FULL_CONE, block_udp=True)],
                    public_hosts=["plat"])
    with platform_lab(topo, tmp_path_factory.mktemp("leave"), ["ws1", "wf1"]) as (lab, _p, ag):
        start_all(ag.values())
        yield lab, ag["ws1"], ag["wf1"]


def test_relayed_pair_moves_to_direct_udp_when_the_block_is_lifted(
        pair: tuple[Lab, Agent, Agent]) -> None:
    lab, a, b = pair
    intents_both_ways(a, b)
    first = connected_on(a, b, "relay-tls", 40)
    wait_for(lambda: ping(a.host, b.overlay_ip, count=1), timeout=10, what="first ping")
    answered: list[bool] = []
    down: list[object] = []
    stop = threading.Event()

    def pinger() -> None:
        while not stop.is_set():
            answered.append(bool(ping(a.host, b.overlay_ip, count=1, timeout=1.0)))
            p = a.peer(b.name)
            if p is None or p["state"] != "connected":
                down.append(p)
            time.sleep(0.2)

    t = threading.Thread(target=pinger, daemon=True)
    t.start()
    try:
        lab.block_udp("ws", False)
        lab.block_udp("wf", False)
        moved = connected_on(a, b, "direct-udp", 90)
        n = len(answered)
        wait_for(lambda: len(answered) >= n + 10, timeout=30, what="pings after the move")
    finally:
        stop.set()
        t.join(10)
    assert down == [], down[:3]
    assert moved["connected_at"] == first["connected_at"], (first, moved)
    assert moved["path_changed_at"] is not None and moved["path_changes"] >= 1, moved
    assert all(answered[n:]), answered[n:]  # the direct path carries the traffic
    lost = answered.count(False)
    assert lost <= len(answered) // 4, (lost, len(answered))
    pb = connected_on(b, a, "direct-udp", 30)  # b moves on its own probe's answer, not a's
    assert pb["path"] == "direct-udp", pb
