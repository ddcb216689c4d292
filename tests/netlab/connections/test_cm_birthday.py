"""Birthday probing through real NATs: a port-restricted site and a symmetric site, no relay.

    refl (UDP reflector)          pr1 (port-restricted NAT)  <-- direct-udp -->  sy1 (symmetric)

The ordinary punch cannot connect this pair (the expected-paths matrix had it as R); with no
relay offered the only way the session comes up is the birthday run: the symmetric side's 256
sockets, the port-restricted side's random probes (tests.support.birthday.attempt).  The lab's
symmetric NAT must really hand out random ports, or a hit would prove nothing: checked first.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time

import pytest

from enclave.discovery import Candidate, CandidateKind, NatBehaviour, PathAddr, Transport
from enclave.discovery.introduction import Introduction
from enclave.discovery.punch import PUNCH_DURATION
from enclave.netlab import Lab
from enclave.netlab.netns import socket_in_netns
from enclave.proto.wire import MSG_CONTROL, MSG_HANDSHAKE_INIT
from tests.support.birthday import HARD_SITE, Attempt, attempt, attempts, topology
from tests.support.cm_agent import Agent, exchange, introduce_pair
from tests.support.cm_lab import REFLECT_UDP, Reflector, lab_agent
from tests.support.lab import LabFactory
from tests.support.pki import Pki

pytestmark = [pytest.mark.netlab, pytest.mark.root]


async def _mapped_ports(lab: Lab, count: int) -> list[tuple[int, int]]:
    """(local port, public port) of `count` sockets of sy1, as the reflector saw them."""
    reflector = Reflector(lab.host("refl"))
    await reflector.start()
    loop = asyncio.get_running_loop()
    socks = [socket_in_netns(lab.host(f"{HARD_SITE}1").netns, socket.AF_INET, socket.SOCK_DGRAM)
             for _ in range(count)]
    try:
        out = []
        for s in socks:
            s.bind(("0.0.0.0", 0))
            s.setblocking(False)
            await loop.sock_sendto(s, b"reflect?", (str(lab.host("refl").ip), REFLECT_UDP))
            data = await asyncio.wait_for(loop.sock_recv(s, 200), 3)
            out.append((s.getsockname()[1], int(data.decode().rsplit(":", 1)[1])))
        return out
    finally:
        for s in socks:
            s.close()
        reflector.close()


def test_symmetric_lab_nat_picks_random_ports(lab_factory: LabFactory) -> None:
    lab = lab_factory(topology(1))
    pairs = asyncio.run(_mapped_ports(lab, 16))
    public = [p for _, p in pairs]
    assert len(set(public)) == 16
    assert all(local != pub for local, pub in pairs)  # not the source port kept
    steps = {b - a for a, b in itertools.pairwise(public)}
    assert len(steps) > 8  # not a sequence (fully-random, not +1 per flow)
    assert max(public) - min(public) > 8192  # spread over the range


def test_port_restricted_and_symmetric_connect_directly_without_relay(
        lab_factory: LabFactory) -> None:
    lab = lab_factory(topology(1))
    [res] = asyncio.run(attempts(lab, 1, 1))
    easy, hard = res.runs
    assert easy is not None and hard is not None, res
    assert easy["role"] == "easy" and hard["role"] == "hard", res
    assert res.paths == ("direct-udp", "direct-udp"), res
    assert res.data_ok, res
    assert easy["outcome"] == "direct", res
    assert 0 < easy["probes"] <= 2048 and easy["sockets"] == 0, res
    assert hard["outcome"] == "direct" and 0 < hard["sockets"] <= 256, res
    # heard 0: the hard side's data socket's own mapping was the one hit (1 in 257)
    assert hard["heard"] <= 4, res
    assert res.direct
    assert res.notes["peers_birthday"] == res.runs, res  # what `enclave peers --json` shows


async def _hard_side_against_a_stranger(lab: Lab) -> dict[str, object]:
    """A hard-side run whose "peer" public address is a socket on the public host that answers
    every opener with garbage: what it received, what the run did, the descriptors after."""
    pki = Pki()
    refl = lab.host("refl")
    hard = lab_agent(pki, "HARD1", lab.host(f"{HARD_SITE}1"), 44000, 44001)
    _key, ghost_cert, _serial = pki.issue("GHST1")  # a real certificate; this system never runs
    stranger = socket_in_netns(refl.netns, socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("0.0.0.0", 45000))
    stranger.setblocking(False)
    cand = Candidate(PathAddr(Transport.UDP, str(refl.ip), 45000), CandidateKind.PUBLIC,
                     NatBehaviour.ENDPOINT_INDEPENDENT)
    loop = asyncio.get_running_loop()
    sources: set[int] = set()
    kinds: set[int] = set()
    try:
        await hard.cm.start()
        intro = Introduction(peer="GHST1", cert_der=ghost_cert, candidates=(cand,),
                             nat=NatBehaviour.ENDPOINT_INDEPENDENT, punch_at=time.time() + 60)
        hard.cm.introduce(intro)  # the punch starts in 60 s: only the run sends now
        fds_before = len(os.listdir("/proc/self/fd"))
        drops_before = sum(hard.cm.counters().values())
        hard.cm.birthday.punch_failed("GHST1", intro)
        t_end = loop.time() + hard.cm.birthday.limits.duration + 0.5
        while loop.time() < t_end:
            await asyncio.sleep(0.05)
            while True:
                try:
                    data, src = stranger.recvfrom(2048)
                except BlockingIOError:
                    break
                kinds.add(data[0])
                if src[1] not in sources:
                    sources.add(src[1])
                    # looks like a CONTROL message to the Node; authenticates under no key
                    stranger.sendto(bytes([MSG_CONTROL, 0, 0, 0]) + os.urandom(48), src)
        result = hard.cm.birthday.result("GHST1")
        return {"sources": len(sources), "kinds": kinds,
                "result": None if result is None else result.to_json(),
                "fds": (fds_before, len(os.listdir("/proc/self/fd"))),
                "drops": sum(hard.cm.counters().values()) - drops_before}
    finally:
        await hard.cm.stop()
        stranger.close()


def test_hard_side_is_bounded_closes_its_sockets_and_answers_no_stranger(
        lab_factory: LabFactory) -> None:
    lab = lab_factory(topology(1))
    got = asyncio.run(_hard_side_against_a_stranger(lab))
    result = got["result"]
    assert isinstance(result, dict), got
    assert result["outcome"] == "gave-up" and result["sockets"] == 256, got
    assert got["sources"] == 256, got  # one mapping per socket, no more
    assert result["heard"] == 4, got  # the garbage got only heard_max sockets followed up
    assert got["drops"] >= 4, got  # ... and the Node dropped it
    # what the stranger got: our punch message (the INIT it would get from the ordinary punch
    # too), never an answer (a RESPONSE, a cookie reply or anything sealed)
    assert got["kinds"] == {MSG_HANDSHAKE_INIT}, got
    fds_before, fds_after = got["fds"]  # type: ignore[misc]
    assert fds_after == fds_before, got  # every socket of the run closed


def test_a_won_path_outlives_a_reintroduction(lab_factory: LabFactory) -> None:
    """The platform introduces the pair again (e.g. new candidates): the ordinary punch fails
    again 5 s later, but the session already runs directly; no new run, nothing closed."""
    lab = lab_factory(topology(1))
    seen: dict[str, object] = {}

    async def again(easy: Agent, hard: Agent, ce: list[Candidate], ch: list[Candidate]) -> None:
        kept = hard.cm.birthday.result(easy.name)
        introduce_pair(easy, ce, hard, ch, punch_in=0.2)
        await asyncio.sleep(PUNCH_DURATION + 1.5)  # past the second punch's give-up
        seen["same_runs"] = (easy.cm.birthday.result(hard.name) is not None
                             and hard.cm.birthday.result(easy.name) is kept)
        seen["paths"] = ((easy.cm.peer(hard.name) or {}).get("path"),
                         (hard.cm.peer(easy.name) or {}).get("path"))
        seen["data_ok"] = await exchange(easy, hard, 3, timeout=4.0)

    async def run() -> Attempt:
        pki = Pki()
        reflector = Reflector(lab.host("refl"))
        await reflector.start()
        try:
            return await attempt(lab, pki, 0, 0, after=again)
        finally:
            reflector.close()

    res = asyncio.run(run())
    assert res.direct, res
    assert seen == {"same_runs": True, "paths": ("direct-udp", "direct-udp"), "data_ok": True}, \
        (seen, res)
