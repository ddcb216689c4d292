"""Roaming through the compiled data plane with real `enclave up` agents.

    sm1 (symmetric NAT "sm") <---- direct UDP ----> pb1 (no NAT, "pb")

    1. connected, ping + TCP over the overlay
    2. sm's router forgets its UDP mappings (conntrack entries deleted: a NAT reboot / rebind);
       its fully-random masquerade gives sm1's next packet a NEW public port
    3. sm1 sends DATA -> pb1's data plane accepts the newest authentic packet from the new
       address, sends there, punts ROAMED -> pb1's Node moves the session (Node.peer_roamed),
       so its CONTROL packets and later key updates use the new address too
    4. traffic keeps flowing both ways; pb1 reports the new endpoint at once (no CONTROL packet
       from sm1 was needed: its next keepalive is 15-25 s away)
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from enclave.netlab import Lab, NatType, Site, Topology
from enclave.netlab.netns import call_in_netns
from tests.support.lab import Agent, intents_both_ways, platform_lab, start_all
from tests.support.platform import Platform
from tests.support.traffic import ping, tcp_transfer
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]


def forget_udp_mappings(router_netns: str) -> int:
    """Delete every UDP conntrack entry (and with it the NAT mapping) in a site router."""
    from pyroute2 import Conntrack

    def body() -> int:
        n = 0
        with Conntrack() as ct:
            for entry in list(ct.dump_entries()):
                if entry.tuple_orig.proto == socket.IPPROTO_UDP:
                    ct.delete(entry)
                    n += 1
        return n

    return call_in_netns(router_netns, body)


@pytest.fixture(scope="module")
def pair(netlab_required: None, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[Lab, Platform, Agent, Agent]]:
    topo = Topology(sites=[Site("sm", nat=NatType.SYMMETRIC), Site("pb", nat=NatType.NONE)],
                    public_hosts=["plat"])
    tmp = tmp_path_factory.mktemp("roam")
    with platform_lab(topo, tmp, ["sm1", "pb1"]) as (lab, plat, ag):
        start_all(ag.values())
        yield lab, plat, ag["sm1"], ag["pb1"]


def _endpoint(b: Agent, a: Agent) -> str | None:
    p = b.connected(a.name)
    return None if p is None else str(p["endpoint"])


def test_session_follows_a_nat_rebinding(pair: tuple[Lab, Platform, Agent, Agent]) -> None:
    lab, _plat, a, b = pair
    intents_both_ways(a, b)
    wait_for(lambda: a.connected(b.name) and b.connected(a.name), timeout=15, interval=0.1,
             what="connected")
    wait_for(lambda: ping(a.host, b.overlay_ip, count=1), timeout=5, what="first ping")
    # a TCP path may win the race; probes move the session to the better UDP path soon
    pb = wait_for(lambda: (p := b.connected(a.name)) and p["path"] == "direct-udp" and p,
                  timeout=20, interval=0.1, what="pb1 on direct UDP")
    old = str(pb["endpoint"])
    old_host = old.rsplit(":", 1)[0]
    changes = pb["path_changes"]
    drops_before = dict(b.status()["node_drops"])

    assert forget_udp_mappings(lab.site("sm").router_netns) > 0
    t0 = time.monotonic()
    # sm1 -> pb1 DATA from the new mapping; the echo replies must follow it
    assert ping(a.host, b.overlay_ip, count=3) == 3
    new = wait_for(lambda: (e := _endpoint(b, a)) != old and e, timeout=5, interval=0.05,
                   what="pb1's session on the new address")  # (timed below: moved_s)
    moved_s = time.monotonic() - t0
    assert new.rsplit(":", 1)[0] == old_host and new != old, (old, new)
    assert moved_s < 5  # far sooner than sm1's next keepalive (a CONTROL packet) could do it
    pb2: dict[str, Any] | None = b.connected(a.name)
    assert pb2 is not None
    assert pb2["path_changes"] > changes
    assert pb2["dataplane"]["roamed"] >= 1
    # traffic both ways after the roam; pb1 starts some of it (its packets go to the new port)
    assert ping(b.host, a.overlay_ip, count=3) == 3
    sent, got = tcp_transfer(b.host, a.host, a.overlay_ip, size=1 << 20)
    assert sent == got
    sent, got = tcp_transfer(a.host, b.host, b.overlay_ip, size=1 << 20)
    assert sent == got
    assert _endpoint(b, a) == new  # no key update or CONTROL packet moved it back
    assert b.status()["node_drops"].get("roamed_unknown_index", 0) == drops_before.get(
        "roamed_unknown_index", 0)
    assert b.connected(a.name) is not None and a.connected(b.name) is not None
