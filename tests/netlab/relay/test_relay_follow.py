"""A one-way cut: the side that stops hearing moves to the relay, and the other side follows.

    fa1  full-cone NAT  ---- direct-udp ----  fb1  full-cone NAT
         fa's router starts dropping what it forwards TO fb's public address (one way):
           fb1 hears nothing from fa1 -> its path watch moves the session to relay-udp
           fa1 still hears fb1 (now relayed), so its own watch stays quiet, while its sends
           go to the dead direct path -> relayed frames on a direct session move fa1 onto the
           relay too (ConnectionManager._follow_relayed_rx); before, fa1 stayed on direct-udp
           and nothing it sent arrived
         the cut is lifted -> both sides back on direct-udp

Pings run both ways throughout (each side sends, so each side's watch has something to judge).
"""

from __future__ import annotations

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
