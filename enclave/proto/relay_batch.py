"""The relay-over-TLS wire format: one WebSocket binary message per relay message, DATA batched.

    REGISTER     header(MSG_RELAY_REGISTER, ch)   | ticket        agent -> relay
    REGISTERED   header(MSG_RELAY_REGISTERED, ch) | lifetime u32 LE    relay -> agent
    DATA         header(MSG_RELAY_DATA, ch)       | batch         both ways

    batch = frame*  with  frame = length (u16 big-endian, 1..MAX_FRAME) | datagram

The same framing carries enclave datagrams on a direct TCP stream (enclave.agent.transport_tcp)
and the fast path's batches between its loops and Python (enclave/_fp_relaypath.pxi, which
checks FRAME_PREFIX and MAX_FRAME against its own copies at import).

The header is the UDP relay's (enclave.proto.wire, RELAY_HEADER_SIZE bytes).  There is no cookie:
the TLS connection is return-routable.  Every datagram is an end-to-end encrypted enclave message
(the same one the UDP relay carries), so the relay sees ciphertext only.  The relay swaps the
8-byte header for the other side's channel and forwards the rest of the message as it came: it
walks the batch only while the receiver's queue stands, to drop bulk datagrams
(enclave.relay_bulk.drop_bulk).  The receiving agent walks it (unpack_batch), and drops the
whole message on the first malformed length: silence, never a partial batch.  Both walk it
with frame_spans.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from enclave.proto.wire import RELAY_HEADER_SIZE

RELAY_WS_PATH = "/v1/relay"  # the platform's relay over TLS, on its HTTPS port
MAX_FRAME = 0xFFFF  # a datagram in a batch (the length prefix is a u16)
MAX_BATCH_FRAMES = 512  # datagrams in one message
MAX_BATCH_BYTES = 1 << 20  # a DATA message's batch, prefixes included
MAX_MESSAGE = RELAY_HEADER_SIZE + MAX_BATCH_BYTES  # the WebSocket max_msg_size of both ends
_PREFIX = struct.Struct(">H")  # the length in front of each datagram: u16 big-endian
FRAME_PREFIX = _PREFIX.size  # its bytes (2)
_LEN = FRAME_PREFIX


class BatchError(ValueError):
    """A batch that cannot be framed within the limits."""


def pack_batch(frames: Iterable[bytes]) -> bytes:
    """frames -> length-prefixed batch (BatchError: empty, oversize frame, too many, too big)."""
    parts: list[bytes] = []
    total = count = 0
    for f in frames:
        n = len(f)
        if not 0 < n <= MAX_FRAME:
            raise BatchError(f"relay frame of {n} bytes (1..{MAX_FRAME})")
        count += 1
        total += _LEN + n
        if count > MAX_BATCH_FRAMES or total > MAX_BATCH_BYTES:
            raise BatchError("relay batch over its limits")
        parts.append(_PREFIX.pack(n))
        parts.append(f)
    if not count:
        raise BatchError("empty relay batch")
    return b"".join(parts)


def split_batches(frames: list[bytes]) -> list[list[bytes]]:
    """frames cut into runs that each fit one batch (oversize frames dropped)."""
    out: list[list[bytes]] = []
    cur: list[bytes] = []
    size = 0
    for f in frames:
        if not 0 < len(f) <= MAX_FRAME:
            continue
        if cur and (len(cur) >= MAX_BATCH_FRAMES or size + _LEN + len(f) > MAX_BATCH_BYTES):
            out.append(cur)
            cur, size = [], 0
        cur.append(f)
        size += _LEN + len(f)
    if cur:
        out.append(cur)
    return out


def frame_spans(view: bytes | memoryview, offset: int = 0) -> Iterator[tuple[int, int]]:
    """(start, stop) of each datagram of the batch at view[offset:], in order, as far as the
    framing holds: the walk ends at a tail too short for a frame (a prefix and at least one
    byte) or at a length that overruns the view.  A zero length inside is yielded as it is
    (start == stop) and the limits are not checked: the caller judges both, and sees where the
    walk ended (the last stop; offset when nothing was yielded)."""
    end = len(view)
    off = offset
    length = _PREFIX.unpack_from  # no slice per frame: the hot path's walk
    while off + _LEN < end:
        start = off + _LEN
        off = start + length(view, off)[0]
        if off > end:
            return
        yield start, off


def unpack_batch(data: bytes | memoryview, offset: int = 0) -> list[bytes] | None:
    """The datagrams of the batch at data[offset:], or None when it is malformed (a zero or
    overrunning length, trailing bytes, empty, too many frames, too big)."""
    view = memoryview(data)
    end = len(view)
    if end - offset > MAX_BATCH_BYTES or end <= offset:
        return None
    out: list[bytes] = []
    stop = offset
    for start, stop in frame_spans(view, offset):
        if start == stop or len(out) >= MAX_BATCH_FRAMES:
            return None
        out.append(bytes(view[start:stop]))
    return out if stop == end else None
