"""Birthday-probing attempts in a netlab: a port-restricted site and a symmetric site.

    refl 198.18.x (UDP reflector)
          |
    +---- inet ----+
    |              |
    pr (port-restricted NAT)        sy (symmetric NAT: masquerade fully-random)
    pr1..prK: easy side agents      sy1..syK: hard side agents

One attempt = a fresh pair of real ConnectionManagers (new data ports, so no NAT state of an
earlier attempt helps), each learning its public mapping from the reflector, introduced to each
other (with no relay, or with a UDP relay that carries the session first), punching at the same
instant; the ordinary punch fails (5 s), birthday probing runs (<= 3 s).  Used by
tests/netlab/connections/test_cm_birthday.py and by bench/birthday_rate.py (the success rate
over many attempts).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from enclave.discovery import Candidate, NatBehaviour, PathAddr, Transport
from enclave.netlab import Lab, NatType, Site, Topology
from enclave.netlab.netns import socket_in_netns
from enclave.platform.relay import RelayCore, RelayServer
from tests.support.cm_agent import Agent, connected, exchange, introduce_pair
from tests.support.cm_lab import RELAY_PORT, Reflector, candidates_for, lab_agent, reflect_udp
from tests.support.pki import Pki
from tests.support.wait import wait_for_async

EASY_SITE, HARD_SITE = "pr", "sy"
UDP_BASE, TCP_BASE = 42000, 43000
SETTLE = 14.0  # s from the punch time: the punch gives up after 5, the run after 3 more
RELAY_KEY = b"birthday-relay-key".ljust(32, b".")


def topology(pairs: int) -> Topology:
    return Topology(
        sites=[Site(EASY_SITE, nat=NatType.PORT_RESTRICTED, hosts=pairs),
               Site(HARD_SITE, nat=NatType.SYMMETRIC, hosts=pairs)],
        public_hosts=["refl"],
    )


@dataclass
class Attempt:
    index: int
    direct: bool = False  # both sides on direct-udp and frames crossed
    paths: tuple[str | None, str | None] = (None, None)
    data_ok: bool = False
    runs: tuple[dict[str, Any] | None, dict[str, Any] | None] = (None, None)
    seconds: float | None = None  # punch time -> both sides direct
    notes: dict[str, Any] = field(default_factory=dict)


def _name(i: int) -> str:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "B" + "".join(alphabet[(i >> (5 * k)) & 31] for k in range(3, -1, -1))


def _direct(a: Agent, b: Agent) -> bool:
    pa, pb = a.cm.peer(b.name), b.cm.peer(a.name)
    return (connected(a, b) and pa is not None and pb is not None
            and pa["path"] == "direct-udp" and pb["path"] == "direct-udp")


After = Callable[[Agent, Agent, list[Candidate], list[Candidate]], Awaitable[None]]


async def attempt(lab: Lab, pki: Pki, index: int, slot: int,
                  relay: PathAddr | None = None, after: After | None = None) -> Attempt:
    """One attempt between hosts pr<slot+1> and sy<slot+1> (ports unique per `index`); with
    `relay` the pair is offered it (the session runs relayed until the run wins); `after`
    (easy, hard, easy's candidates, hard's) runs once the attempt is judged, before the stop."""
    easy_host = lab.host(f"{EASY_SITE}{slot + 1}")
    hard_host = lab.host(f"{HARD_SITE}{slot + 1}")
    refl = lab.host("refl")
    port = index % 900
    easy = lab_agent(pki, _name(2 * index), easy_host, UDP_BASE + port, TCP_BASE + port)
    hard = lab_agent(pki, _name(2 * index + 1), hard_host, UDP_BASE + port, TCP_BASE + port)
    assert easy.cm.birthday.local_nat is NatBehaviour.ENDPOINT_INDEPENDENT
    assert hard.cm.birthday.local_nat is NatBehaviour.SYMMETRIC
    res = Attempt(index)
    try:
        await easy.cm.start()
        await hard.cm.start()
        me, mh = await asyncio.gather(reflect_udp(easy, refl), reflect_udp(hard, refl))
        res.notes["mapped"] = (me, mh)
        punch_at = time.time() + 0.5
        ce, ch = candidates_for(easy_host, easy, me), candidates_for(hard_host, hard, mh)
        introduce_pair(easy, ce, hard, ch, punch_at=punch_at, relay=relay,
                       relay_key=RELAY_KEY if relay is not None else None)
        try:
            await wait_for_async(lambda: _direct(easy, hard), SETTLE, interval=0.05,
                                 what="direct path")
            res.seconds = round(time.time() - punch_at, 2)
        except AssertionError:
            pass
        def settled() -> bool:  # both runs have seen the outcome (their path checks poll)
            runs = (easy.cm.birthday.result(hard.name), hard.cm.birthday.result(easy.name))
            return all(r is not None and r.outcome != "running" for r in runs)

        with contextlib.suppress(AssertionError):
            await wait_for_async(settled, 4.0, interval=0.05, what="runs settled")
        pe, ph = easy.cm.peer(hard.name) or {}, hard.cm.peer(easy.name) or {}
        res.paths = (pe.get("path"), ph.get("path"))
        res.notes["path_changes"] = (pe.get("path_changes"), ph.get("path_changes"))
        res.notes["endpoints"] = (pe.get("endpoint"), ph.get("endpoint"))
        res.notes["peers_birthday"] = (pe.get("birthday"), ph.get("birthday"))
        res.notes["node_drops"] = (easy.cm.counters(), hard.cm.counters())
        re_, rh = easy.cm.birthday.result(hard.name), hard.cm.birthday.result(easy.name)
        res.runs = (None if re_ is None else re_.to_json(), None if rh is None else rh.to_json())
        if res.paths == ("direct-udp", "direct-udp"):
            res.data_ok = await exchange(easy, hard, 3, timeout=4.0)
        res.direct = res.paths == ("direct-udp", "direct-udp") and res.data_ok
        if after is not None:
            await after(easy, hard, ce, ch)
    finally:
        await asyncio.gather(easy.cm.stop(), hard.cm.stop(), return_exceptions=True)
    return res


async def attempts(lab: Lab, count: int, pairs: int, *, relay: bool = False) -> list[Attempt]:
    """`count` attempts, `pairs` at a time (each on its own pair of hosts); `relay`: a UDP
    relay on the reflector's host is offered to every pair."""
    pki = Pki()
    refl = lab.host("refl")
    reflector = Reflector(refl)
    await reflector.start()
    server: RelayServer | None = None
    relay_addr = None
    if relay:
        sock = socket_in_netns(refl.netns)
        sock.bind(("0.0.0.0", RELAY_PORT))
        server = RelayServer(RelayCore(RELAY_KEY))
        await server.start(sock=sock)
        relay_addr = PathAddr(Transport.RELAY, str(refl.ip), RELAY_PORT)
    out: list[Attempt] = []
    try:
        for first in range(0, count, pairs):
            batch = range(first, min(count, first + pairs))
            out += await asyncio.gather(*(attempt(lab, pki, i, i - first, relay_addr)
                                          for i in batch))
    finally:
        reflector.close()
        if server is not None:
            server.close()
    return out
