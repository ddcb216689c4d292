"""The expected-paths matrix: every pair of NAT types, all 36 cells at once in one lab.

    plat 198.18.0.11 (UDP relay :3479)     refl 198.18.0.12 (UDP/TCP reflector :3478)
         \\                                   /
          +------------- inet -------------+
          |  12 sites: <type>a (row side)  and  <type>b (column side), 6 hosts each  |
    cell (row r, column c):  A = host c+1 of site r-a   <-- punch -->   B = host r+1 of site c-b

Every agent (a real ConnectionManager, sockets inside its host's namespace) learns its public
UDP mapping from the reflector, gets the other's Introduction (real certificates, a relay ticket)
and punches at the same instant.  D cells must come up on a direct UDP path; R cells give up on
direct paths after ~5 s and come up through the relay.  Each cell then carries authenticated
test frames both ways; its set-up time (introduction -> first authenticated packet) is
recorded with record_property.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import pytest

from enclave.discovery import PathAddr, Transport
from enclave.discovery.paths import GIVE_UP_AFTER
from enclave.netlab import Lab, NatType, Site, Topology
from enclave.netlab.netns import socket_in_netns
from enclave.platform.relay import RelayCore, RelayServer
from tests.support.cm_agent import Agent, connected, exchange, introduce_pair
from tests.support.cm_lab import (
    RELAY_PORT,
    Reflector,
    candidates_for,
    lab_agent,
    reflect_udp,
)
from tests.support.pki import Pki
from tests.support.wait import wait_for_async

pytestmark = [pytest.mark.netlab, pytest.mark.root]

N, F, R_, P, S, W = (
    NatType.NONE,
    NatType.FULL_CONE,
    NatType.RESTRICTED,
    NatType.PORT_RESTRICTED,
    NatType.SYMMETRIC,
    NatType.FIREWALL,
)
TYPES = [N, F, R_, P, S, W]
SHORT = {N: "none", F: "full", R_: "rest", P: "port", S: "sym", W: "fw"}
# port-restricted <-> symmetric: D since birthday probing (enclave/discovery/birthday.py)
RELAYED = {(S, S), (S, W), (W, S)}
EXPECTED = {(r, c): ("relay" if (r, c) in RELAYED else "direct") for r in TYPES for c in TYPES}
UDP_BASE, TCP_BASE = 40000, 41000
DIRECT_TIMEOUT = 12.0  # birthday pairs: punch (5 s), then the run (<= 3 s)
RELAY_TIMEOUT = 16.0


@dataclass
class CellResult:
    row: NatType
    col: NatType
    connected: bool = False
    paths: tuple[str | None, str | None] = (None, None)
    data_ok: bool = False
    setup_ms: tuple[float | None, float | None] = (None, None)
    punch_ms: tuple[float | None, float | None] = (None, None)
    notes: dict[str, Any] = field(default_factory=dict)


def _on_direct(a: Agent, b: Agent) -> bool:
    pa, pb = a.cm.peer(b.name) or {}, b.cm.peer(a.name) or {}
    return pa.get("path") == pb.get("path") == "direct-udp"


def _name(i: int) -> str:
    # valid system names (Crockford base32), unique per agent
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "S" + "".join(alphabet[(i >> (5 * k)) & 31] for k in range(3, -1, -1))


async def _run_matrix(lab: Lab) -> dict[tuple[NatType, NatType], CellResult]:
    pki = Pki()
    key = b"matrix-relay-key".ljust(32, b".")
    plat, refl = lab.host("plat"), lab.host("refl")
    relay_sock = socket_in_netns(plat.netns)
    relay_sock.bind(("0.0.0.0", RELAY_PORT))
    relay = RelayServer(RelayCore(key))
    await relay.start(sock=relay_sock)
    reflector = Reflector(refl)
    await reflector.start()
    relay_addr = PathAddr(Transport.RELAY, str(plat.ip), RELAY_PORT)

    cells: dict[tuple[NatType, NatType], tuple[Agent, Agent]] = {}
    hosts: dict[str, Any] = {}
    agents: list[Agent] = []
    k = 0
    for ri, r in enumerate(TYPES):
        for ci, c in enumerate(TYPES):
            ha = lab.host(f"{SHORT[r]}a{ci + 1}")
            hb = lab.host(f"{SHORT[c]}b{ri + 1}")
            a = lab_agent(pki, _name(k), ha, UDP_BASE + ci, TCP_BASE + ci)
            b = lab_agent(pki, _name(k + 1), hb, UDP_BASE + ri, TCP_BASE + ri)
            k += 2
            cells[(r, c)] = (a, b)
            hosts[a.name], hosts[b.name] = ha, hb
            agents += [a, b]
    results: dict[tuple[NatType, NatType], CellResult] = {}
    try:
        for ag in agents:
            await ag.cm.start()
        mapped = dict(
            zip(
                [ag.name for ag in agents],
                await asyncio.gather(*(reflect_udp(ag, refl) for ag in agents)),
                strict=True,
            )
        )
        punch_at = time.time() + 1.0
        for (_r, _c), (a, b) in cells.items():
            ca = candidates_for(hosts[a.name], a, mapped[a.name])
            cb = candidates_for(hosts[b.name], b, mapped[b.name])
            # both sides punch at the same instant, as the platform arranges
            introduce_pair(a, ca, b, cb, relay=relay_addr, relay_key=key, punch_at=punch_at)

        def all_up(keys: list[tuple[NatType, NatType]], direct: bool = False) -> bool:
            return all(connected(*cells[key]) and (not direct or _on_direct(*cells[key]))
                       for key in keys)

        direct = [key for key, v in EXPECTED.items() if v == "direct"]
        # settle only: each cell's outcome is recorded below and judged by the tests
        with suppress(AssertionError):
            await wait_for_async(lambda: all_up(direct, True), DIRECT_TIMEOUT, interval=0.1,
                                 what="direct cells connected")
        with suppress(AssertionError):
            await wait_for_async(lambda: all_up(list(cells)), RELAY_TIMEOUT, interval=0.1,
                                 what="all cells connected")
        await asyncio.sleep(0.5)  # let late path moves settle
        oks = await asyncio.gather(*(exchange(a, b, 3, timeout=4.0) for a, b in cells.values()))
        for ((r, c), (a, b)), ok in zip(cells.items(), oks, strict=True):
            pa, pb = a.cm.peer(b.name) or {}, b.cm.peer(a.name) or {}
            results[(r, c)] = CellResult(
                r,
                c,
                connected=connected(a, b),
                paths=(pa.get("path"), pb.get("path")),
                data_ok=ok,
                setup_ms=(pa.get("setup_ms"), pb.get("setup_ms")),
                punch_ms=(pa.get("punch_ms"), pb.get("punch_ms")),
                notes={
                    "a": {x: pa.get(x) for x in ("state", "endpoint", "rtt_ms")},
                    "b": {x: pb.get(x) for x in ("state", "endpoint", "rtt_ms")},
                    "mapped": (mapped[a.name], mapped[b.name]),
                },
            )
    finally:
        await asyncio.gather(*(ag.cm.stop() for ag in agents), return_exceptions=True)
        relay.close()
        reflector.close()
    return results


@pytest.fixture(scope="module")
def matrix(netlab_required: None) -> Iterator[dict[tuple[NatType, NatType], CellResult]]:
    sites = [Site(f"{SHORT[t]}{side}", nat=t, hosts=6) for t in TYPES for side in "ab"]
    with Lab(Topology(sites=sites, public_hosts=["plat", "refl"])) as lab:
        yield asyncio.run(asyncio.wait_for(_run_matrix(lab), 90))


@pytest.mark.parametrize(
    ("row", "col"),
    [(r, c) for r in TYPES for c in TYPES],
    ids=[f"{SHORT[r]}-{SHORT[c]}" for r in TYPES for c in TYPES],
)
def test_nat_pair(
    matrix: dict[tuple[NatType, NatType], CellResult],
    row: NatType,
    col: NatType,
    record_property: Any,
) -> None:
    res = matrix[(row, col)]
    record_property("paths", res.paths)
    record_property("setup_ms", res.setup_ms)
    record_property("punch_ms", res.punch_ms)
    print(f"{SHORT[row]:>4} x {SHORT[col]:<4}: {res.paths} setup_ms={res.setup_ms}")
    assert res.connected, res
    want = "relay-udp" if EXPECTED[(row, col)] == "relay" else "direct-udp"
    assert res.paths == (want, want), res
    assert res.data_ok, res
    assert all(ms is not None and ms > 0 for ms in res.setup_ms), res
    if want == "relay-udp":  # relay first: up over the relay while the punch was still on
        assert all(ms is not None and ms < GIVE_UP_AFTER * 1000 for ms in res.punch_ms), res
