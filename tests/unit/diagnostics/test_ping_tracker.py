"""Bookkeeping of operator pings (enclave.proto.ping.PingTracker): numbered cases."""

from __future__ import annotations

import itertools

import pytest

from enclave.discovery import PathAddr, Transport
from enclave.proto.events import PingAnswered
from enclave.proto.ping import MAX_OUTSTANDING, PING_LIFETIME, PingTracker
from enclave.proto.wire import CTRL_PING, CTRL_PONG, Control, WireError, decode_control

PATH = PathAddr(Transport.UDP, "198.18.2.2", 51820)


def tracker(**kw: int | float) -> PingTracker:
    ids = itertools.count(1)
    return PingTracker(lambda: next(ids), **kw)  # type: ignore[arg-type]


def test_1_answer_gives_rtt_and_path_once() -> None:
    t = tracker()
    pid = t.start("BBBBB", PATH, 10.0)
    got = t.answer("BBBBB", pid, 10.25)
    assert got == PingAnswered("BBBBB", pid, 0.25, PATH)
    assert t.answer("BBBBB", pid, 10.3) is None  # a duplicated PONG answers nothing
    assert len(t) == 0


def test_2_pong_from_another_peer_is_ignored() -> None:
    t = tracker()
    pid = t.start("BBBBB", PATH, 1.0)
    assert t.answer("CCCCC", pid, 1.1) is None
    assert t.answer("BBBBB", pid, 1.2) is not None  # still outstanding for the right peer


def test_3_unknown_id_is_ignored() -> None:
    t = tracker()
    t.start("BBBBB", PATH, 1.0)
    assert t.answer("BBBBB", 999, 1.1) is None
    assert len(t) == 1


def test_4_bounded_oldest_forgotten_first() -> None:
    t = tracker()
    ids = [t.start("BBBBB", PATH, float(i) * 0.001) for i in range(MAX_OUTSTANDING + 10)]
    assert len(t) == MAX_OUTSTANDING
    assert t.answer("BBBBB", ids[0], 1.0) is None  # evicted
    assert t.answer("BBBBB", ids[-1], 1.0) is not None


def test_5_expired_ping_answers_nothing() -> None:
    t = tracker()
    pid = t.start("BBBBB", PATH, 0.0)
    assert t.answer("BBBBB", pid, PING_LIFETIME + 0.01) is None
    assert len(t) == 0


def test_6_forget_peer_drops_only_its_pings() -> None:
    t = tracker()
    b = t.start("BBBBB", PATH, 0.0)
    c = t.start("CCCCC", PATH, 0.0)
    t.forget_peer("BBBBB")
    assert t.answer("BBBBB", b, 0.1) is None
    assert t.answer("CCCCC", c, 0.1) is not None


def test_7_ids_are_fresh_and_non_zero() -> None:
    seq = iter([0, 5, 5, 7])
    t = PingTracker(lambda: next(seq))
    assert t.start("BBBBB", PATH, 0.0) == 5
    assert t.start("BBBBB", PATH, 0.0) == 7  # 0 and an outstanding id are drawn again


def test_8_bad_limits_refused() -> None:
    with pytest.raises(ValueError):
        tracker(max_outstanding=0)
    with pytest.raises(ValueError):
        tracker(lifetime=0.0)


@pytest.mark.parametrize("kind", [CTRL_PING, CTRL_PONG])
def test_9_ping_pong_wire_round_trip(kind: int) -> None:
    raw = Control(kind, 2**64 - 1).encode()
    assert len(raw) == 9 and raw[0] == kind
    assert decode_control(raw) == Control(kind, 2**64 - 1)
    for bad in (raw[:8], raw + b"\x00"):  # a PING carries exactly its u64 id
        with pytest.raises(WireError):
            decode_control(bad)
