"""TCP hole punching where UDP is dropped, and two hosts behind one NAT meeting on their LAN.

refl 198.18.0.11 (UDP/TCP reflector)
   |
 inet ---- blka (port-restricted NAT; nft drops all UDP)  blka1
      ---- blkb (port-restricted NAT; nft drops all UDP)  blkb1
      ---- home (port-restricted NAT)                     home1 home2  (one LAN)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from enclave.discovery import Candidate
from enclave.netlab import Host, Lab, NatType, Site, Topology
from tests.support.cm_agent import Agent, connected, exchange, introduce_pair
from tests.support.cm_lab import Reflector, candidates_for, lab_agent, reflect_tcp, reflect_udp
from tests.support.pki import Pki
from tests.support.wait import wait_for_async

pytestmark = [pytest.mark.netlab, pytest.mark.root]



@pytest.fixture(scope="module")
def lab(netlab_required: None) -> Iterator[Lab]:
    topo = Topology(
        sites=[
            Site("blka", nat=NatType.PORT_RESTRICTED),
            Site("blkb", nat=NatType.PORT_RESTRICTED),
            Site("home", nat=NatType.PORT_RESTRICTED, hosts=2),
        ],
        public_hosts=["refl"],
    )
    with Lab(topo) as lab:
        for site in ("blka", "blkb"):
            lab.block_udp(site, True)
        yield lab


@asynccontextmanager
async def reflected_pair(
    lab: Lab, ha: Host, hb: Host, a_ports: tuple[int, int], b_ports: tuple[int, int]
) -> AsyncIterator[tuple[Agent, Agent, Host]]:
    """Agents AAAAA on ha and BBBBB on hb (UDP, TCP ports; not started) and the reflector host
    (its reflector running); agents stopped and reflector closed on exit."""
    pki = Pki()
    refl = lab.host("refl")
    reflector = Reflector(refl)
    await reflector.start()
    agents: list[Agent] = []
    try:
        agents.append(lab_agent(pki, "AAAAA", ha, *a_ports))
        agents.append(lab_agent(pki, "BBBBB", hb, *b_ports))
        yield agents[0], agents[1], refl
    finally:
        for a in agents:
            await a.cm.stop()
        reflector.close()


async def meet(
    a: Agent, ca: list[Candidate], b: Agent, cb: list[Candidate], punch_in: float, timeout: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Introduce a and b to punch at one instant; they connect within `timeout` and carry
    frames both ways. Their peer records (a's of b, b's of a)."""
    introduce_pair(a, ca, b, cb, punch_at=time.time() + punch_in)
    await wait_for_async(lambda: connected(a, b), timeout, what="a <-> b connected")
    assert await exchange(a, b, 5)
    pa, pb = a.cm.peer(b.name), b.cm.peer(a.name)
    assert pa is not None and pb is not None
    return pa, pb


def test_tcp_simultaneous_open_when_udp_is_dropped(lab: Lab, record_property: Any) -> None:
    async def body() -> None:
        ha, hb = lab.host("blka1"), lab.host("blkb1")
        async with reflected_pair(lab, ha, hb, (42000, 43000), (42000, 43000)) as (a, b, refl):
            ta = await reflect_tcp(ha, a.tcp_port, refl)
            tb = await reflect_tcp(hb, b.tcp_port, refl)
            assert ta is not None and tb is not None  # TCP gets out
            await a.cm.start()
            await b.cm.start()
            ua, ub = await reflect_udp(a, refl, 0.6), await reflect_udp(b, refl, 0.6)
            assert ua is None and ub is None  # ... UDP does not
            ca = candidates_for(ha, a, ua, ta, tcp=True)
            cb = candidates_for(hb, b, ub, tb, tcp=True)
            pa, pb = await meet(a, ca, b, cb, punch_in=0.5, timeout=12)
            assert pa["path"] == pb["path"] == "direct-tcp", (pa, pb)
            assert pa["endpoint"] == f"{tb[0]}:{tb[1]}" and pb["endpoint"] == f"{ta[0]}:{ta[1]}"
            record_property("setup_ms", (pa["setup_ms"], pb["setup_ms"]))
            record_property("punch_ms", (pa["punch_ms"], pb["punch_ms"]))

    asyncio.run(asyncio.wait_for(body(), 40))


def test_same_nat_hosts_connect_over_the_lan(lab: Lab, record_property: Any) -> None:
    async def body() -> None:
        h1, h2 = lab.host("home1"), lab.host("home2")
        async with reflected_pair(lab, h1, h2, (42000, 43000), (42001, 43001)) as (a, b, refl):
            await a.cm.start()
            await b.cm.start()
            ua, ub = await reflect_udp(a, refl), await reflect_udp(b, refl)
            assert ua is not None and ub is not None and ua[0] == ub[0]  # one public address
            ca, cb = candidates_for(h1, a, ua), candidates_for(h2, b, ub)
            pa, pb = await meet(a, ca, b, cb, punch_in=0.3, timeout=6)
            assert pa["path"] == pb["path"] == "lan", (pa, pb)
            assert pa["endpoint"] == f"{h2.ip}:{b.udp_port}"
            assert pb["endpoint"] == f"{h1.ip}:{a.udp_port}"
            record_property("setup_ms", (pa["setup_ms"], pb["setup_ms"]))

    asyncio.run(asyncio.wait_for(body(), 30))
