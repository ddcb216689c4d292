"""Relay first, and back to the relay when a direct path dies: real agents and a real platform.

    ws1  symmetric NAT   ---- relay-udp (at once, no punch can work) ----  ss1  symmetric NAT
    ws1  symmetric NAT   ---- direct-udp ----  wf1  full-cone NAT
           ws's router starts dropping UDP  -> the same session moves to relay-tls (the UDP
                                               relay cannot reach ws1 either; TCP cannot punch:
                                               the symmetric side maps TCP per destination)
           the block is lifted             -> back to direct-udp, still the same session

"The same session": connected_at unchanged, never seen down while polled, no new handshake
(the agents' established-handshake counts do not move); a continuous ping is answered again
after the gap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from enclave.discovery.paths import GIVE_UP_AFTER
from enclave.netlab import Lab, NatType, Site, Topology
from tests.support.lab import Agent, intents_both_ways, platform_lab, start_all
from tests.support.peer_paths import connected_on
from tests.support.traffic import ping
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]

World = tuple[Lab, dict[str, Agent]]


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    topo = Topology(sites=[Site("ws", nat=NatType.SYMMETRIC), Site("wf", nat=NatType.FULL_CONE),
                           Site("ss", nat=NatType.SYMMETRIC)],
                    public_hosts=["plat"])
    with platform_lab(topo, tmp_path_factory.mktemp("fallback"), ["ws1", "wf1", "ss1"]) as w:
        start_all(w[2].values())
        yield w[0], w[2]


def established(a: Agent) -> int:
    return int(a.status()["handshakes"].get("established", 0))


class Pinger:
    """A ping every 0.2 s from a to b's overlay address; records answers and any poll that
    saw a's session with b not connected."""

    def __init__(self, a: Agent, b: Agent) -> None:
        self.answered: list[bool] = []
        self.down: list[Any] = []
        self._stop = threading.Event()

        def loop() -> None:
            while not self._stop.is_set():
                self.answered.append(bool(ping(a.host, b.overlay_ip, count=1, timeout=1.0)))
                p = a.peer(b.name)
                if p is None or p["state"] != "connected":
                    self.down.append(p)
                time.sleep(0.2)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def answered_again(self, what: str, n: int = 5) -> None:
        """Wait for `n` answered pings in a row from now on."""
        start = len(self.answered)

        def run_of_n() -> bool:
            tail = self.answered[start:]
            return len(tail) >= n and all(tail[-n:])

        wait_for(run_of_n, timeout=60, interval=0.3, what=f"pings answered {what}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_symmetric_pair_relays_over_udp_from_the_start(world: World) -> None:
    _lab, ag = world
    a, b = ag["ws1"], ag["ss1"]
    intents_both_ways(a, b)
    pa = connected_on(a, b, "relay-udp", 30)
    connected_on(b, a, "relay-udp", 10)
    # relay first: up while the ordinary punch was still trying (it gives up after
    # GIVE_UP_AFTER s; the relay used to be registered only then)
    assert pa["setup_ms"] is not None and pa["setup_ms"] < GIVE_UP_AFTER * 1000, pa
    assert pa["relay_registered"], pa
    wait_for(lambda: ping(a.host, b.overlay_ip, count=3, timeout=1.0), timeout=10,
             what="ping over the relay")
    intents_both_ways(a, b, "remove")


def _same_session(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after["connected_at"] == before["connected_at"], (before, after)


def test_direct_pair_falls_back_to_the_relay_and_returns(world: World) -> None:
    lab, ag = world
    a, b = ag["ws1"], ag["wf1"]
    intents_both_ways(a, b)
    first = connected_on(a, b, "direct-udp", 40)
    connected_on(b, a, "direct-udp", 10)
    wait_for(lambda: ping(a.host, b.overlay_ip, count=1, timeout=1.0), timeout=10,
             what="first ping")
    def counts() -> tuple[int, int]:
        return established(a), established(b)

    handshakes = counts()
    pinger = Pinger(a, b)
    blocked = False
    try:
        lab.block_udp("ws", True)
        blocked = True
        relayed = connected_on(a, b, "relay-tls", 60)
        connected_on(b, a, "relay-tls", 30)
        pinger.answered_again("over the relay")
        assert relayed["path_changed_at"] is not None and relayed["path_changes"] >= 1, relayed
        _same_session(first, relayed)
        assert counts() == handshakes, (counts(), handshakes)  # moved, not handshaken again

        lab.block_udp("ws", False)
        blocked = False
        back = connected_on(a, b, "direct-udp", 60)
        connected_on(b, a, "direct-udp", 30)
        pinger.answered_again("back on the direct path")
        _same_session(first, back)
        assert back["path_changed_at"] > relayed["path_changed_at"], (relayed, back)
        assert counts() == handshakes, (counts(), handshakes)
    finally:
        pinger.stop()
        if blocked:
            lab.block_udp("ws", False)
    assert pinger.down == [], pinger.down[:3]
