"""A relayed session outlives its first relay ticket: the platform re-issues tickets.

    ss1 (symmetric) <---- platform relay ----> st1 (symmetric)

The platform runs with ENCLAVE_PLATFORM_RELAY_TICKET_LIFETIME=14: every ticket (and so every
relay registration) ends 14 s after it was minted.  The hub re-issues both tickets of an
introduced pair after half the lifetime ({"type": "relay_ticket"} on the control channel); the
agents re-register with them at once.  Traffic over the relay must keep flowing for more than
twice the lifetime.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from enclave.netlab import NatType, Site, Topology
from tests.support.lab import Agent, intents_both_ways, platform_lab, start_all
from tests.support.platform import Platform
from tests.support.traffic import ping
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]
LIFETIME = 14


@pytest.fixture(scope="module")
def relayed(netlab_required: None, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Platform, Agent, Agent]]:
    topo = Topology(sites=[Site("ss", nat=NatType.SYMMETRIC), Site("st", nat=NatType.SYMMETRIC)],
                    public_hosts=["plat"])
    tmp = tmp_path_factory.mktemp("ticket")
    env = {"ENCLAVE_PLATFORM_RELAY_TICKET_LIFETIME": str(LIFETIME)}
    with platform_lab(topo, tmp, ["ss1", "st1"], plat_env=env) as (_lab, plat, ag):
        start_all(ag.values())
        yield plat, ag["ss1"], ag["st1"]


def test_relayed_session_outlives_its_first_ticket(
        relayed: tuple[Platform, Agent, Agent]) -> None:
    plat, a, b = relayed
    t0 = time.monotonic()  # the tickets are minted with the introduction, just after this
    intents_both_ways(a, b)
    pa = wait_for(lambda: a.connected(b.name), timeout=20, interval=0.2, what="relayed session")
    assert pa["path"] == "relay-udp", pa
    wait_for(lambda: ping(a.host, b.overlay_ip, count=1), timeout=5, what="first ping")
    missed = []
    while time.monotonic() - t0 < 2 * LIFETIME + 4:
        if not ping(a.host, b.overlay_ip, count=1, timeout=1.0) and not ping(
                b.host, a.overlay_ip, count=1, timeout=1.0):
            missed.append(round(time.monotonic() - t0, 1))
        time.sleep(0.5)
    assert missed == [], f"no echo over the relay at t={missed} s"
    assert plat.log().count("relay tickets renewed") >= 2, plat.log()[-3000:]
    pa, pb = a.connected(b.name), b.connected(a.name)
    assert pa is not None and pb is not None
    assert pa["path"] == pb["path"] == "relay-udp"
    assert "ignored malformed 'relay_ticket'" not in a.log() + b.log()
