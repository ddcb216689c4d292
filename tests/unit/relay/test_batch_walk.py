"""The two readers of a relay batch (enclave.proto.relay_batch.unpack_batch, the receiver's,
and enclave.relay_bulk.drop_bulk, the congested relay's) on malformed and well-formed batches:
each keeps its own verdict (unpack_batch: the whole batch or None; drop_bulk: the frames before
the first that does not fit), pinned here as the two walkers gave them before they shared one
(frame_spans); and drop_bulk with CoDel deciding (codel_drop_bulk)."""

from __future__ import annotations

import random

import pytest

from enclave import _fastpath as fp
from enclave.proto.relay_batch import MAX_BATCH_FRAMES, MAX_FRAME, frame_spans, unpack_batch
from enclave.proto.wire import MSG_DATA, MSG_HANDSHAKE_INIT
from enclave.relay_bulk import codel_drop_bulk, drop_bulk, is_bulk

pytestmark = pytest.mark.unit

B = bytes([MSG_DATA]) + b"B" * 600  # bulk: DATA longer than a sparse-lane frame
S = bytes([MSG_DATA]) + b"s" * 10  # small DATA (an ACK)
H = bytes([MSG_HANDSHAKE_INIT]) + b"h" * 600  # not DATA: never bulk
BIG = bytes([MSG_HANDSHAKE_INIT]) + bytes(MAX_FRAME - 1)  # the longest frame
Z = b"\x00\x00"  # a zero length prefix


def f(*msgs: bytes) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in msgs)


# (case, batch, unpack_batch's verdict, drop_bulk's verdict when every bulk datagram is
#  dropped, drop_bulk's when none is: (kept frames with their prefixes, small kept, dropped))
CASES: list[tuple[str, bytes, list[bytes] | None,
                  tuple[list[bytes], int, int], tuple[list[bytes], int, int]]] = [
    ("empty", b"", None, ([], 0, 0), ([], 0, 0)),
    ("half a prefix", b"\x00", None, ([], 0, 0), ([], 0, 0)),
    ("a zero length alone", Z, None, ([], 0, 0), ([], 0, 0)),
    ("a prefix, no datagram", b"\x00\x01", None, ([], 0, 0), ([], 0, 0)),
    ("one small", f(S), [S], ([f(S)], 1, 0), ([f(S)], 1, 0)),
    ("one bulk", f(B), [B], ([], 0, 1), ([f(B)], 0, 0)),
    ("bulk, half a prefix", f(B) + b"\x00", None, ([], 0, 1), ([f(B)], 0, 0)),
    ("bulk, a zero length at the tail", f(B) + Z, None, ([], 0, 1), ([f(B)], 0, 0)),
    ("a zero length inside", f(S) + Z + f(B), None,
     ([f(S), Z], 2, 1), ([f(S), Z, f(B)], 2, 0)),
    ("length overruns", b"\x00\x05abcd", None, ([], 0, 0), ([], 0, 0)),
    ("bulk, then a length that overruns", f(B) + b"\x00\x05abcd", None,
     ([], 0, 1), ([f(B)], 0, 0)),
    ("bulk, then a truncated small", f(B) + f(S)[:-1], None, ([], 0, 1), ([f(B)], 0, 0)),
    ("the longest length over a bulk", b"\xff\xff" + B, None, ([], 0, 0), ([], 0, 0)),
    ("well formed mix", f(B, S, H, B), [B, S, H, B],
     ([f(S), f(H)], 2, 2), ([f(B), f(S), f(H), f(B)], 2, 0)),
    ("one frame too many", f(S) * (MAX_BATCH_FRAMES + 1), None,
     ([f(S)] * (MAX_BATCH_FRAMES + 1), MAX_BATCH_FRAMES + 1, 0),
     ([f(S)] * (MAX_BATCH_FRAMES + 1), MAX_BATCH_FRAMES + 1, 0)),
    ("as many frames as may be", f(B) * MAX_BATCH_FRAMES, [B] * MAX_BATCH_FRAMES,
     ([], 0, MAX_BATCH_FRAMES), ([f(B)] * MAX_BATCH_FRAMES, 0, 0)),
    ("over the byte limit", f(BIG) * 17, None, ([f(BIG)] * 17, 17, 0), ([f(BIG)] * 17, 17, 0)),
]


def _drop_bulk(batch: bytes, drop: bool) -> tuple[list[bytes], int, int]:
    kept, small, dropped = drop_bulk(batch, lambda: drop)
    return [bytes(k) for k in kept], small, dropped


@pytest.mark.parametrize(("case", "batch", "unpacked", "all_dropped", "none_dropped"), CASES,
                         ids=[c[0] for c in CASES])
def test_each_reader_keeps_its_verdict(case: str, batch: bytes, unpacked: list[bytes] | None,
                                       all_dropped: tuple[list[bytes], int, int],
                                       none_dropped: tuple[list[bytes], int, int]) -> None:
    assert unpack_batch(batch) == unpacked
    assert unpack_batch(memoryview(b"H" * 8 + batch), 8) == unpacked
    assert _drop_bulk(batch, True) == all_dropped
    assert _drop_bulk(batch, False) == none_dropped


# (batch, the (start, stop) frame_spans gives: as far as the framing holds, zero lengths too)
SPANS = [
    (b"", []),
    (b"\x00", []),
    (Z, []),  # a tail too short for a frame
    (b"\x00\x01", []),
    (f(S), [(2, 13)]),
    (f(B) + Z, [(2, 603)]),
    (f(S) + Z + f(B), [(2, 13), (15, 15), (17, 618)]),
    (f(B) + b"\x00\x05abcd", [(2, 603)]),
    (b"\xff\xff" + B, []),
    (f(B, S), [(2, 603), (605, 616)]),
]


@pytest.mark.parametrize(("batch", "spans"), SPANS)
def test_frame_spans(batch: bytes, spans: list[tuple[int, int]]) -> None:
    assert list(frame_spans(batch)) == spans
    head = b"H" * 8
    assert list(frame_spans(memoryview(head + batch), 8)) == [(a + 8, b + 8) for a, b in spans]


def test_codel_decides_per_bulk_datagram() -> None:
    """Below the target nothing goes; above it for a whole interval CoDel drops the first bulk
    datagram (one drop per step time at the start of an episode), never a small one."""
    codel = fp.CoDel(5_000_000, 100_000_000)
    batch = f(S, B, B, H, B)
    kept, small, dropped = codel_drop_bulk(batch, codel, 1_000_000, 10**12)
    assert [bytes(k) for k in kept] == [f(S), f(B), f(B), f(H), f(B)] and (small, dropped) == (2, 0)
    assert codel_drop_bulk(batch, codel, 20_000_000, 10**12)[2] == 0  # above: the interval starts
    kept, small, dropped = codel_drop_bulk(batch, codel, 20_000_000, 10**12 + 100_000_000)
    assert [bytes(k) for k in kept] == [f(S), f(B), f(H), f(B)] and (small, dropped) == (2, 1)
    assert codel.dropping


def test_drop_bulk_asks_once_per_bulk_datagram_in_order() -> None:
    batch = f(B, S, B, H, B)
    asked: list[int] = []

    def every_other() -> bool:
        asked.append(len(asked))
        return len(asked) % 2 == 1

    kept, small, dropped = drop_bulk(batch, every_other)
    assert asked == [0, 1, 2]
    assert [bytes(k) for k in kept] == [f(S), f(B), f(H)] and (small, dropped) == (2, 2)


def test_random_bytes_agree() -> None:
    """Where unpack_batch takes a batch whole, drop_bulk keeps exactly its frames."""
    rng = random.Random(11)
    msgs = [B, S, H, b"x"]
    for _ in range(3000):
        data = f(*rng.choices(msgs, k=rng.randrange(0, 6)))
        if rng.random() < 0.5 and data:
            data = data[:rng.randrange(len(data))] + rng.randbytes(rng.randrange(0, 4))
        got = unpack_batch(data)
        kept, small, dropped = _drop_bulk(data, False)
        assert dropped == 0
        if got is not None:
            assert kept == [f(m) for m in got]
            assert small == sum(1 for m in got if not is_bulk(m))
        assert b"".join(kept) == data[:sum(len(k) for k in kept)]
