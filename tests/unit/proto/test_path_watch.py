"""PathWatch (enclave/proto/upkeep.py) on an injected clock: when the current path is probed,
when it is declared dead, and that hearing anything ends a silence.  Numbered cases."""

from __future__ import annotations

import itertools

import pytest

from enclave.proto import timing as T
from enclave.proto.upkeep import DEAD, PROBE, PathWatch, Probe, Upkeep

pytestmark = pytest.mark.unit


def drive(w: PathWatch, last_rx: float, last_tx: float, start: float, end: float
          ) -> list[tuple[float, str]]:
    """Call check() at every deadline between start and end (as the Node's timer does)."""
    out: list[tuple[float, str]] = []
    now = start
    while True:
        got = w.check(now, last_rx, last_tx)
        if got is not None:
            out.append((now, got))
        d = w.deadline(last_rx, last_tx)
        if d is None or d > end:
            return out
        now = max(d, now)


def test_1_nothing_sent_since_heard_is_not_a_silence() -> None:
    w = PathWatch()
    assert w.deadline(10.0, 10.0) is None and w.deadline(10.0, 5.0) is None
    assert drive(w, 10.0, 10.0, 10.0, 1000.0) == []


def test_2_sent_then_quiet_probes_then_dead_once() -> None:
    w = PathWatch()
    rx, tx = 10.0, 11.0  # we sent after we last heard
    assert w.deadline(rx, tx) == rx + T.PATH_SUSPECT_AFTER
    got = drive(w, rx, tx, 11.0, 100.0)
    probes = [t for t, v in got if v == PROBE]
    assert len(probes) == T.PATH_PROBES
    assert probes[0] == rx + T.PATH_SUSPECT_AFTER
    assert all(b - a == pytest.approx(T.PATH_PROBE_INTERVAL) for a, b in itertools.pairwise(probes))
    assert [v for _, v in got][-1] == DEAD and [v for _, v in got].count(DEAD) == 1
    assert got[-1][0] == pytest.approx(probes[-1] + T.PATH_PROBE_INTERVAL)
    assert w.deadline(rx, tx) is None  # said once: nothing more until something is heard


def test_3_an_answer_ends_the_silence() -> None:
    w = PathWatch()
    t = 10.0 + T.PATH_SUSPECT_AFTER
    assert w.check(t, 10.0, 11.0) == PROBE
    # the probe's reply moved last_rx: watching again, no DEAD
    assert w.check(t + T.PATH_PROBE_INTERVAL, t + 0.01, t) is None
    assert w.deadline(t + 0.01, t) is None  # nothing sent since
    got = drive(w, t + 0.01, t, t, t + 100.0)
    assert got == []


def test_4_a_new_silence_after_dead_is_probed_again() -> None:
    w = PathWatch()
    got = drive(w, 10.0, 11.0, 11.0, 100.0)
    assert got[-1][1] == DEAD
    # heard at 50, sent at 51, quiet again: a fresh round of probes, then DEAD again
    again = drive(w, 50.0, 51.0, 51.0, 200.0)
    assert [v for _, v in again] == [PROBE] * T.PATH_PROBES + [DEAD]


def test_5_reset_after_a_move_starts_over() -> None:
    w = PathWatch()
    got = drive(w, 10.0, 11.0, 11.0, 100.0)
    assert got[-1][1] == DEAD
    w.reset()  # the session moved to another path
    assert w.check(100.0, 10.0, 11.0) == PROBE  # the new path is probed in its turn


def test_6_early_check_does_nothing() -> None:
    w = PathWatch()
    assert w.check(10.0 + T.PATH_SUSPECT_AFTER - 0.001, 10.0, 11.0) is None


def test_7_a_move_brings_the_rtt_probe_forward() -> None:
    u = Upkeep()
    u.path_moved("b", 5.0)  # no session: nothing to measure
    assert u.deadline() is None
    u.session_up("b", 10.0)
    assert u.due(10.0) == [Probe("b")]
    assert u.deadline() == 10.0 + T.RTT_PROBE_INTERVAL
    u.path_moved("b", 12.0)  # the session moved: the new path's rtt now, not in 10 s
    assert u.deadline() == 12.0 and u.due(12.0) == [Probe("b")]
