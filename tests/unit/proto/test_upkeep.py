"""The Node's per-peer upkeep (enclave/proto/upkeep.py) on a simulated clock: rtt probes,
relay re-offers, reconnects — the timers the asyncio shell used to keep per peer."""

from __future__ import annotations

import pytest

from enclave.discovery.candidates import Candidate, CandidateKind, PathAddr, Transport
from enclave.proto import timing as T
from enclave.proto.upkeep import Nudge, Probe, Reconnect, Upkeep

RELAY = Candidate(PathAddr(Transport.RELAY, "198.18.0.9", 7), CandidateKind.RELAY)
DIRECT = Candidate(PathAddr(Transport.UDP, "198.18.0.2", 51820), CandidateKind.PUBLIC)
KEY = bytes(range(32))


def run(u: Upkeep, start: float, end: float, step: float = 0.05) -> list[tuple[float, object]]:
    """Call due() at every deadline (as the shell does) between start and end."""
    out: list[tuple[float, object]] = []
    now = start
    while True:
        d = u.deadline()
        if d is None or d > end:
            return out
        now = max(now, d)
        out.extend((now, a) for a in u.due(now))


def test_1_nothing_scheduled_no_deadline() -> None:
    u = Upkeep()
    assert u.deadline() is None and u.due(1e9) == [] and len(u) == 0


def test_2_rtt_probe_at_session_up_then_every_interval() -> None:
    u = Upkeep()
    u.session_up("b", 100.0)
    assert u.deadline() == 100.0
    got = run(u, 100.0, 100.0 + 3 * T.RTT_PROBE_INTERVAL)
    assert [t for t, _ in got] == [100.0 + i * T.RTT_PROBE_INTERVAL for i in range(4)]
    assert all(a == Probe("b") for _, a in got)


def test_3_relay_reoffered_a_bounded_number_of_times() -> None:
    u = Upkeep()
    u.relay_offered("b", RELAY, 10.0)
    got = run(u, 10.0, 10.0 + 1000)
    assert len(got) == T.RELAY_NUDGES
    assert all(a == Nudge("b", RELAY) for _, a in got)
    assert got[0][0] == pytest.approx(10.0 + T.RELAY_NUDGE_INTERVAL)
    assert u.deadline() is None  # done: nothing left for this peer


def test_4_session_up_stops_the_relay_reoffers() -> None:
    u = Upkeep()
    u.relay_offered("b", RELAY, 10.0)
    assert run(u, 10.0, 10.6)  # a few re-offers ...
    u.session_up("b", 10.6)
    later = run(u, 10.6, 11.0 + T.RTT_PROBE_INTERVAL / 2)
    assert all(isinstance(a, Probe) for _, a in later)  # ... then only rtt probes


def test_5_lost_session_reconnects_after_the_delay() -> None:
    u = Upkeep()
    u.session_up("b", 0.0)
    u.session_lost("b", 50.0, reconnect=(DIRECT,), peer_key=KEY)
    got = run(u, 50.0, 100.0)
    assert got == [(50.0 + T.RECONNECT_DELAY, Reconnect("b", (DIRECT,), KEY))]
    assert len(u) == 0  # no probe for a lost session, the reconnect fires once


def test_6_local_close_schedules_nothing_and_forget_cancels() -> None:
    u = Upkeep()
    u.session_up("b", 0.0)
    u.session_lost("b", 5.0, reconnect=None, peer_key=KEY)  # closed locally
    assert u.deadline() is None
    u.session_lost("c", 5.0, reconnect=(DIRECT,), peer_key=KEY)
    u.forget("c")  # withdrawn before the reconnect
    assert u.deadline() is None and len(u) == 0


def test_7_connect_cancels_a_pending_reconnect() -> None:
    u = Upkeep()
    u.session_lost("b", 5.0, reconnect=(DIRECT,), peer_key=KEY)
    u.cancel_reconnect("b")
    assert u.due(1e6) == []


def test_8_peers_are_independent() -> None:
    u = Upkeep()
    u.session_up("b", 0.0)
    u.relay_offered("c", RELAY, 0.0)
    u.session_lost("d", 0.0, reconnect=(DIRECT,), peer_key=KEY)
    acts = u.due(T.RECONNECT_DELAY)
    assert Probe("b") in acts and Nudge("c", RELAY) in acts
    assert Reconnect("d", (DIRECT,), KEY) in acts
    assert len(u) == 2  # b's probe and c's re-offers remain


def test_9_probe_intervals_follow_the_jitter() -> None:
    scale = iter([0.9, 1.1, 1.0, 1.0])
    u = Upkeep(lambda: next(scale))
    u.session_up("b", 0.0)
    got = [t for t, _ in run(u, 0.0, 30.5)]
    assert got == pytest.approx([0.0, 9.0, 20.0, 30.0])
