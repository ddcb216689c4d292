"""The relay-over-TLS batch framing (enclave.proto.relay_batch): round trips, and malformed or
oversize batches give silence (None / BatchError), never a partial batch."""

from __future__ import annotations

import random

import pytest

from enclave.proto.relay_batch import (
    MAX_BATCH_BYTES,
    MAX_BATCH_FRAMES,
    MAX_FRAME,
    BatchError,
    pack_batch,
    split_batches,
    unpack_batch,
)

pytestmark = pytest.mark.unit


def test_round_trip_keeps_every_frame_in_order() -> None:
    frames = [bytes([i]) * (1 + i * 37 % 1500) for i in range(100)]
    assert unpack_batch(pack_batch(frames)) == frames
    head = b"H" * 8
    assert unpack_batch(head + pack_batch(frames), 8) == frames


@pytest.mark.parametrize("bad", [
    b"",                       # empty
    b"\x00",                   # half a length
    b"\x00\x00",               # zero length
    b"\x00\x05abcd",           # length overruns the message
    b"\x00\x01a\x00",          # trailing half length
    b"\x00\x01a\x00\x02b",     # second frame overruns
])
def test_malformed_batches_are_dropped_whole(bad: bytes) -> None:
    assert unpack_batch(bad) is None


def test_bounds() -> None:
    assert unpack_batch(b"\x00\x01a" * (MAX_BATCH_FRAMES + 1)) is None
    assert unpack_batch(b"\x00\x01a" * MAX_BATCH_FRAMES) is not None
    assert unpack_batch(bytes(MAX_BATCH_BYTES + 1)) is None
    with pytest.raises(BatchError):
        pack_batch([])
    with pytest.raises(BatchError):
        pack_batch([b""])
    with pytest.raises(BatchError):
        pack_batch([bytes(MAX_FRAME + 1)])
    with pytest.raises(BatchError):
        pack_batch([b"x"] * (MAX_BATCH_FRAMES + 1))


def test_split_batches_fit_the_limits() -> None:
    frames = [bytes(1400)] * 2000 + [b"", bytes(MAX_FRAME + 1)]
    runs = split_batches(frames)
    assert sum(len(r) for r in runs) == 2000  # the empty and oversize frames dropped
    for r in runs:
        assert unpack_batch(pack_batch(r)) == r


def test_random_bytes_never_raise() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        data = rng.randbytes(rng.randrange(0, 64))
        got = unpack_batch(data)
        assert got is None or b"".join(len(f).to_bytes(2, "big") + f for f in got) == data
