"""Punch schedule and path ranking (table cases)."""

from __future__ import annotations

import itertools
import random

import pytest

from enclave.discovery import (
    Candidate,
    CandidateKind,
    NatBehaviour,
    PathAddr,
    PathManager,
    PunchSchedule,
    Transport,
    path_rank,
)
from enclave.discovery.candidates import punchable
from tests.support.path_probes import PUB, REL

LAN = Candidate(PathAddr(Transport.UDP, "198.19.1.2", 1), CandidateKind.PRIVATE)
TCP = Candidate(PathAddr(Transport.TCP, "198.18.0.2", 443), CandidateKind.PUBLIC)
SYM = Candidate(PathAddr(Transport.UDP, "198.18.0.3", 1), CandidateKind.PUBLIC,
                NatBehaviour.SYMMETRIC)


@pytest.mark.parametrize(
    ("case", "cand", "rank"), [(1, LAN, 0), (2, PUB, 1), (3, TCP, 2), (4, REL, 3)]
)
def test_path_rank(case: int, cand: Candidate, rank: int) -> None:
    assert path_rank(cand) == rank


@pytest.mark.parametrize(
    ("case", "cand", "local", "ok"),
    [
        (1, SYM, NatBehaviour.SYMMETRIC, False),
        (2, SYM, NatBehaviour.ENDPOINT_INDEPENDENT, True),
        (3, REL, NatBehaviour.NONE, False),
        (4, LAN, NatBehaviour.SYMMETRIC, True),
    ],
)
def test_punchable(case: int, cand: Candidate, local: NatBehaviour, ok: bool) -> None:
    assert punchable(cand, local) is ok


def test_schedule_order_interval_duration() -> None:
    s = PunchSchedule([TCP, PUB, LAN], 10.0, random.Random(1))
    assert s.due(9.99) == []
    times, t = [], 10.0
    while (d := s.next_deadline()) is not None:
        t = d
        got = s.due(t)
        assert got == [LAN, PUB, TCP]  # private first, then public, then TCP
        times.append(t)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.1 <= g <= 0.2 for g in gaps) and len(set(gaps)) > 1
    assert times[0] == 10.0 and 14.7 <= times[-1] < 15.0
    assert 25 <= len(times) <= 50


def test_path_manager_best_and_give_up() -> None:
    pm = PathManager([PUB, LAN, TCP], 0.0, random.Random(2))
    assert pm.best() is None
    assert not pm.relay_due(4.9) and pm.relay_due(5.0) and not pm.relay_due(6.0)
    pm.confirm(TCP.addr, 6.0)
    assert pm.best() == TCP.addr
    pid = pm.new_probe(PUB.addr, 6.0)
    assert not pm.probe_reply(pid + 1, PUB.addr, 6.1)  # unknown id: ignored
    assert pm.probe_reply(pid, PUB.addr, 6.1) and pm.best() == PUB.addr
    assert not pm.probe_reply(pid, PUB.addr, 6.2)  # an id answers once
    pm.confirm(LAN.addr, 7.0)
    assert pm.best() == LAN.addr


def test_path_manager_reprobes_only_better_paths() -> None:
    pm = PathManager([PUB, LAN], 0.0, random.Random(3), reprobe_interval=30.0)
    pm.confirm(PUB.addr, 0.5)
    t = 0.0
    while t < 6:
        pm.due(t)
        t = pm.next_deadline() or 100.0
    assert 30 <= t <= 36  # the next burst
    assert pm.due(t) == [LAN.addr]  # only the better (LAN) candidate is probed again
    pm.confirm(LAN.addr, t)
    while (d := pm.next_deadline()) is not None and d < 200:
        assert pm.due(d) in ([], [LAN.addr])
    assert pm.next_deadline() is None  # best possible path found: no more bursts
