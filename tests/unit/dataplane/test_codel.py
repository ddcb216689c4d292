"""The data plane's CoDel state machine (codel_decide, enclave/_fp_aqm.pxi) with an injected
clock: the behaviour RFC 8289 section 5 describes, case by case."""

from __future__ import annotations

import itertools
import math

import pytest

from enclave import _fastpath as fp

MS = 1_000_000
TARGET = 5 * MS
INTERVAL = 100 * MS


def codel() -> fp.CoDel:
    return fp.CoDel(TARGET, INTERVAL)


def first_drop() -> tuple[fp.CoDel, int]:
    """A CoDel above target for one interval, so that its last step dropped (case 2); and the
    time of that step."""
    c = codel()
    t = 1000 * MS
    c.step(TARGET + MS, t)
    t += INTERVAL
    assert c.step(TARGET + MS, t)
    return c, t


def test_1_no_drop_below_target() -> None:
    c = codel()
    for t in range(0, 10_000 * MS, MS):
        assert not c.step(TARGET - 1, t)
    assert not c.dropping


def test_2_first_drop_after_one_interval_above_target() -> None:
    c = codel()
    t0 = 1000 * MS
    assert not c.step(TARGET + MS, t0)           # first time above: the interval starts
    assert not c.step(TARGET + MS, t0 + INTERVAL - 1)
    assert c.step(TARGET + MS, t0 + INTERVAL)    # above for a whole interval: drop
    assert c.dropping and c.count == 1


def test_3_a_dip_below_target_restarts_the_interval() -> None:
    c = codel()
    t0 = 1000 * MS
    assert not c.step(TARGET + MS, t0)
    assert not c.step(TARGET - 1, t0 + INTERVAL // 2)
    assert not c.step(TARGET + MS, t0 + INTERVAL // 2 + 1)
    assert not c.step(TARGET + MS, t0 + INTERVAL + 1)   # the new interval is not over yet
    assert c.step(TARGET + MS, t0 + INTERVAL // 2 + 1 + INTERVAL)


def test_4_an_empty_queue_is_a_good_queue() -> None:
    c = codel()
    t0 = 1000 * MS
    assert not c.step(TARGET + MS, t0)
    assert not c.step(TARGET + MS, t0 + INTERVAL // 2, empty=True)
    assert not c.step(TARGET + MS, t0 + INTERVAL)


def test_5_drop_spacing_shrinks_as_interval_over_sqrt_count() -> None:
    c, t = first_drop()
    scheduled = [c.drop_next]                   # after the first drop: now + interval / 1
    assert scheduled[0] == t + INTERVAL
    drops = [t]
    while len(drops) < 8:                       # a packet every 0.1 ms, queue stays high
        t += MS // 10
        if c.step(TARGET + MS, t):
            assert t >= scheduled[-1]           # never before the scheduled time ...
            assert t - scheduled[-1] < MS // 10  # ... and at the first packet after it
            drops.append(t)
            scheduled.append(c.drop_next)
    for count, (a, b) in enumerate(itertools.pairwise(scheduled), start=2):
        assert abs((b - a) - INTERVAL / math.sqrt(count)) <= 1, count
    gaps = [b - a for a, b in itertools.pairwise(scheduled)]
    assert gaps == sorted(gaps, reverse=True)
    assert c.count == 8


def test_6_leaves_dropping_when_sojourn_goes_below_target() -> None:
    c, t = first_drop()
    assert c.dropping
    assert not c.step(TARGET - 1, t + MS)
    assert not c.dropping
    for k in range(1, 50):                      # and stays quiet while the queue is good
        assert not c.step(TARGET - 1, t + k * INTERVAL)


def dropping_at_count(count: int) -> tuple[fp.CoDel, int]:
    """A CoDel above target for an interval, then stepped above target every 0.1 ms until its
    drop count is ``count``; and the time of its last step."""
    c, t = first_drop()
    while c.count < count:
        t += MS // 10
        c.step(TARGET + MS, t)
    return c, t


def test_7_reentry_soon_after_keeps_the_count() -> None:
    c, t = dropping_at_count(6)
    last_drop_next = c.drop_next
    t += MS
    c.step(TARGET - 1, t)                       # leave
    assert not c.dropping
    t += MS
    c.step(TARGET + MS, t)                      # above again: a new interval
    t += INTERVAL
    assert t - last_drop_next < 16 * INTERVAL
    assert c.step(TARGET + MS, t)
    assert c.count == 6 - 1                     # count - lastcount of the last episode


def test_8_reentry_long_after_starts_over() -> None:
    c, t = dropping_at_count(6)
    c.step(TARGET - 1, t + MS)
    t += 20 * INTERVAL                          # more than 16 intervals later
    c.step(TARGET + MS, t)
    t += INTERVAL
    assert c.step(TARGET + MS, t)
    assert c.count == 1


def test_9_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        fp.CoDel(0, INTERVAL)
    with pytest.raises(ValueError):
        fp.CoDel(TARGET, 0)


def test_10_defaults_are_the_data_planes() -> None:
    assert fp.AQM_TARGET_NS == 2 * MS
    assert fp.AQM_INTERVAL_NS == 100 * MS
    c = fp.CoDel()
    assert not c.step(fp.AQM_TARGET_NS + 1, 0)
    assert c.step(fp.AQM_TARGET_NS + 1, fp.AQM_INTERVAL_NS)
