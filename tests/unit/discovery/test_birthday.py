"""Birthday probing, sans-I/O (enclave.discovery.birthday): roles, the success math, and the
bounds of both sides' runs with an injected clock and random source."""

from __future__ import annotations

import random

import pytest

from enclave.discovery import NatBehaviour
from enclave.discovery.birthday import (
    BirthdayLimits,
    BirthdayRole,
    EasyProber,
    HardOpener,
    role_for,
    success_probability,
)

EIM, SYM = NatBehaviour.ENDPOINT_INDEPENDENT, NatBehaviour.SYMMETRIC


def _run_easy(p: EasyProber, until: float, step: float = 0.001) -> tuple[list[int], list[float]]:
    ports: list[int] = []
    times: list[float] = []
    t = p.start
    while t <= until:
        got = p.due(t)
        ports += got
        times += [t] * len(got)
        t = round(t + step, 6)
    return ports, times


def test_roles_only_for_symmetric_with_endpoint_independent() -> None:
    assert role_for(SYM, EIM) is BirthdayRole.HARD
    assert role_for(EIM, SYM) is BirthdayRole.EASY
    for a in NatBehaviour:
        for b in NatBehaviour:
            if {a, b} != {SYM, EIM}:
                assert role_for(a, b) is None, (a, b)


def test_success_probability_matches_the_docs() -> None:
    assert success_probability(256, 2048) == pytest.approx(0.99975, abs=5e-5)
    assert 1 - (1 - 256 / 64512) ** 2048 == pytest.approx(0.99971, abs=5e-5)  # the approximation
    assert success_probability(256, 175) >= 0.5 > success_probability(256, 174)
    assert success_probability(256, 750) >= 0.95 > success_probability(256, 749)
    assert success_probability(0, 2048) == 0.0
    assert success_probability(256, 0) == 0.0
    assert success_probability(60000, 10000) == 1.0  # more probes than free ports: certain


def test_easy_side_sends_bounded_distinct_ports_at_the_rate() -> None:
    lim = BirthdayLimits(probes=500, probe_rate=1000.0, duration=3.0, easy_delay=0.15)
    p = EasyProber(10.0, random.Random(1), lim)
    assert p.due(10.0) == [] and p.due(10.1) == []  # the hard side opens first
    ports, times = _run_easy(p, 14.0)
    assert len(ports) == 500 == p.sent  # never more than `probes`
    assert len(set(ports)) == 500  # distinct
    assert all(1024 <= x <= 65535 for x in ports)
    # never ahead of the rate: by time t at most (t - start) * rate + 1 probes
    for i, t in enumerate(times):
        assert i + 1 <= (t - 10.15) * 1000 + 1 + 1e-6
    assert p.finished(13.0)  # duration over
    assert p.next_deadline(13.0) is None


def test_easy_side_stops_when_won_and_after_the_duration() -> None:
    lim = BirthdayLimits(probes=2048, probe_rate=1000.0, duration=3.0)
    p = EasyProber(0.0, random.Random(2), lim)
    first = p.due(0.5)
    assert first and len(first) <= lim.max_batch  # however late: one batch per call
    p.won(0.6)
    assert p.finished(0.6) and p.due(0.7) == [] and p.next_deadline(0.7) is None
    q = EasyProber(0.0, random.Random(2), BirthdayLimits(probes=2048, probe_rate=10.0))
    _run_easy(q, 5.0, step=0.01)
    assert q.sent <= 10.0 * (3.0 - 0.15) + 1  # the rate bounded it, then the duration ended it
    assert q.finished(3.0) and not q.finished(2.99)
    assert q.due(3.5) == []


def test_easy_side_ports_come_from_the_injected_random() -> None:
    a = _run_easy(EasyProber(0.0, random.Random(7)), 4.0)[0]
    b = _run_easy(EasyProber(0.0, random.Random(7)), 4.0)[0]
    c = _run_easy(EasyProber(0.0, random.Random(8)), 4.0)[0]
    assert a == b and a != c
    assert len(a) == BirthdayLimits().probes


def test_hard_side_opens_bounded_sockets_at_the_rate() -> None:
    lim = BirthdayLimits(sockets=100, open_rate=200.0, duration=3.0)
    h = HardOpener(0.0, lim)
    opened = []
    t = 0.0
    while t < 4.0:
        n = h.due(t)
        assert n <= lim.max_batch
        assert h.opened <= t * 200.0 + 1 + 1e-6
        opened.append(n)
        t = round(t + 0.01, 6)
    assert sum(opened) == 100 == h.opened
    assert h.finished(3.0) and h.due(3.1) == 0


def test_hard_side_follows_up_few_heard_sockets_and_keeps_the_winner() -> None:
    lim = BirthdayLimits(sockets=10, heard_max=2, heard_interval=0.1)
    h = HardOpener(0.0, lim)
    assert h.due(0.4) == 10  # all opened: only the follow-ups are left to time
    assert h.heard(5, 0.5) and h.heard(9, 0.5)
    assert not h.heard(11, 0.5)  # bounded: strangers at the peer's address cannot add more
    assert h.heard(5, 0.6)  # one already followed stays followed
    assert sorted(h.follow_ups(0.5)) == [5, 9]
    assert h.follow_ups(0.55) == []  # not before heard_interval
    assert sorted(h.follow_ups(0.61)) == [5, 9]
    assert h.next_deadline(0.62) == pytest.approx(0.71)
    h.won(0.7, 9)
    assert h.winner == 9 and h.finished(0.7)
    assert h.follow_ups(1.0) == [] and h.due(1.0) == 0 and h.next_deadline(1.0) is None
    h.won(0.8, 5)  # the first win stands
    assert h.winner == 9


def test_hard_side_gives_up_after_the_duration() -> None:
    h = HardOpener(0.0, BirthdayLimits(duration=3.0))
    assert not h.finished(2.99)
    assert h.next_deadline(2.99) is not None
    assert h.finished(3.0) and h.winner is None
    assert not h.heard(1, 3.0)  # over: nothing more is followed up
