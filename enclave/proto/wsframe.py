"""WebSocket frames (RFC 6455 section 5) for the relay over TLS, read straight into one buffer.

    0               1               2               3
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| length 7    | length 16 (126) / 64 (127)    |
    |I|S|S|S|       |A|             |                               |
    |N|V|V|V|       |S|             +-------------------------------+
    | |1|2|3|       |K|             | masking key (if MASK)         |
    +-+-+-+-+-------+-+-------------+-------------------------------+
    | payload ...                                                   |

Only what the relay's two ends need after the HTTP upgrade: binary messages (text is accepted
and handed on like binary; the relay ignores it), ping / pong / close, fragmented messages
reassembled up to `max_message` bytes; no extensions (RSV bits set: protocol error).

FrameReader is sans-I/O: an asyncio.BufferedProtocol hands out `buffer()` for the transport (the
TLS layer decrypts straight into it), reports `filled(n)`, and takes the complete messages out
with `messages()`, each payload a memoryview into the buffer (no copy) valid until the next
`buffer()` call.  Malformed input raises WsError with the close code to send (1002 protocol
error, 1009 too big), after which the reader is spent.

Masking: a server requires every frame from the client masked (RFC 6455 5.1) and unmasks it; a
key of zero is a mask that changes nothing, so it is skipped.  The relay's own client masks with
the zero key (`ZERO_MASK`): the stream is TLS end to end between agent and platform and every
payload is enclave ciphertext the client does not choose byte by byte, so the masking that
protects cleartext intermediaries from script-chosen bytes buys nothing here, while an XOR pass
over every byte on both ends costs CPU on the relay's path.
"""

from __future__ import annotations

import struct

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_DATA_OPS = (OP_TEXT, OP_BINARY)
_CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009

ZERO_MASK = b"\x00\x00\x00\x00"
MAX_CONTROL_PAYLOAD = 125
MAX_HEADER = 14  # 2 + 8 (64-bit length) + 4 (mask)
INITIAL_BUFFER = 256 * 1024  # bytes a reader starts with; grows to the largest frame seen
MIN_READ = 64 * 1024  # free room a buffer() call always offers (a TLS layer reads into it)

_INCOMPLETE = object()
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


class WsError(Exception):
    """Malformed WebSocket input: close with `code` (and read nothing more)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def frame_header(opcode: int, length: int, mask: bytes | None = None) -> bytes:
    """The header of one final (FIN) frame of `length` payload bytes; with `mask` (4 bytes) the
    MASK bit and the key (the payload must then be masked with it; ZERO_MASK: as it is)."""
    first = 0x80 | opcode
    bit = 0x80 if mask is not None else 0
    if length < 126:
        head = bytes((first, bit | length))
    elif length < 1 << 16:
        head = _LEN16.pack(first, bit | 126, length)
    else:
        head = _LEN64.pack(first, bit | 127, length)
    return head + mask if mask is not None else head


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()[:MAX_CONTROL_PAYLOAD - 2]


def unmask(payload: memoryview | bytes, mask: bytes) -> bytes:
    """payload XOR the repeated 4-byte mask (the zero mask is handled by the caller)."""
    n = len(payload)
    key = int.from_bytes(mask * (n // 4 + 1), "little") & ((1 << (8 * n)) - 1)
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


class FrameReader:
    """The frames of one direction of a WebSocket, in one growing buffer.

    masked: True on the server (every frame must carry a mask), False on the client (none may).
    max_message: the largest message (after reassembly of fragments) accepted; more is 1009.
    """

    def __init__(self, *, masked: bool, max_message: int, initial: int = INITIAL_BUFFER) -> None:
        self.masked = masked
        self.max_message = max_message
        self._limit = max_message + MAX_HEADER  # the largest buffer a frame can need
        self._buf = bytearray(max(initial, MIN_READ))
        self._view = memoryview(self._buf)
        self._start = 0  # first byte not yet parsed
        self._end = 0  # end of the bytes read
        self._frag_op: int | None = None  # opcode of a fragmented message in progress
        self._frags: list[bytes] = []
        self._frag_size = 0
        self._failed = False

    @property
    def pending(self) -> int:
        """Bytes read but not yet part of a complete frame."""
        return self._end - self._start

    def buffer(self) -> memoryview:
        """Free room for the next read (at least MIN_READ bytes, and enough for the frame in
        progress).  Moves a partial frame to the front, or into a bigger buffer when the frame
        it heads needs one; invalidates the payload views messages() handed out before."""
        if self._start == self._end:
            self._start = self._end = 0
        pending = self._end - self._start
        need = max(self._frame_need(), pending + MIN_READ)
        if len(self._buf) - self._end >= MIN_READ and len(self._buf) - self._start >= need:
            return self._view[self._end:]
        size = len(self._buf)
        while size < need:
            size *= 2
        size = min(size, self._limit + MIN_READ)
        keep = self._view[self._start:self._end]
        if size > len(self._buf):
            buf = bytearray(size)
            buf[:pending] = keep
            self._buf, self._view = buf, memoryview(buf)
        else:  # to the front; an overlapping move goes through a copy
            self._buf[:pending] = bytes(keep) if self._start < pending else keep
        del keep
        self._start, self._end = 0, pending
        return self._view[self._end:]

    def _frame_need(self) -> int:
        """Bytes the frame at _start needs in all (header + payload), 0 if not known yet."""
        avail = self._end - self._start
        if avail < 2:
            return 0
        b1 = self._buf[self._start + 1]
        n = b1 & 0x7F
        hlen = 2 + (2 if n == 126 else 8 if n == 127 else 0) + (4 if b1 & 0x80 else 0)
        if avail < hlen:
            return 0
        if n == 126:
            n = int.from_bytes(self._buf[self._start + 2:self._start + 4], "big")
        elif n == 127:
            n = int.from_bytes(self._buf[self._start + 2:self._start + 10], "big")
        return hlen + min(n, self._limit)

    def filled(self, n: int) -> None:
        """`n` bytes were read into the room buffer() gave."""
        self._end += n

    def messages(self) -> list[tuple[int, memoryview | bytes]]:
        """Every complete message read so far: (opcode, payload), control frames included, in
        order.  WsError on malformed input (the messages before it are lost with it: the
        connection is closed anyway)."""
        if self._failed:
            return []
        out: list[tuple[int, memoryview | bytes]] = []
        try:
            while True:
                got = self._frame()
                if got is _INCOMPLETE:
                    return out
                if isinstance(got, tuple):  # None: a fragment, kept until its message is whole
                    out.append(got)
        except WsError:
            self._failed = True
            raise

    def _frame(self) -> tuple[int, memoryview | bytes] | object | None:
        """The next frame: its message, None for a fragment, _INCOMPLETE if not all read."""
        buf, start = self._buf, self._start
        avail = self._end - start
        if avail < 2:
            return _INCOMPLETE
        b0, b1 = buf[start], buf[start + 1]
        if b0 & 0x70:
            raise WsError(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension agreed)")
        fin, op, has_mask, n = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
        if bool(has_mask) != self.masked:
            raise WsError(CLOSE_PROTOCOL_ERROR,
                          "unmasked frame from a client" if self.masked else "masked frame")
        pos = start + 2
        if n == 126:
            if avail < 4:
                return _INCOMPLETE
            n = int.from_bytes(buf[pos:pos + 2], "big")
            pos += 2
        elif n == 127:
            if avail < 10:
                return _INCOMPLETE
            n = int.from_bytes(buf[pos:pos + 8], "big")
            pos += 8
        if op in _CONTROL_OPS:
            if not fin or n > MAX_CONTROL_PAYLOAD:
                raise WsError(CLOSE_PROTOCOL_ERROR, "fragmented or long control frame")
        elif op not in _DATA_OPS and op != OP_CONTINUATION:
            raise WsError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {op}")
        if n > self.max_message:
            raise WsError(CLOSE_TOO_BIG, f"frame of {n} bytes")
        mask = None
        if has_mask:
            if self._end - pos < 4:
                return _INCOMPLETE
            mask = bytes(buf[pos:pos + 4])
            pos += 4
        if self._end - pos < n:
            return _INCOMPLETE
        self._start = pos + n
        payload: memoryview | bytes = self._view[pos:pos + n]
        if mask is not None and mask != ZERO_MASK:
            payload = unmask(payload, mask)
        if op in _CONTROL_OPS:
            return op, payload
        return self._data(op, bool(fin), payload)

    def _data(self, op: int, fin: bool, payload: memoryview | bytes
              ) -> tuple[int, memoryview | bytes] | None:
        if op != OP_CONTINUATION:
            if self._frag_op is not None:
                raise WsError(CLOSE_PROTOCOL_ERROR, "a new message inside a fragmented one")
            if fin:
                return op, payload
            self._frag_op, self._frags, self._frag_size = op, [], 0
        elif self._frag_op is None:
            raise WsError(CLOSE_PROTOCOL_ERROR, "continuation without a message")
        self._frag_size += len(payload)
        if self._frag_size > self.max_message:
            raise WsError(CLOSE_TOO_BIG, f"fragmented message over {self.max_message} bytes")
        self._frags.append(bytes(payload))
        if not fin:
            return None
        whole = b"".join(self._frags)
        first = self._frag_op
        self._frag_op, self._frags, self._frag_size = None, [], 0
        return first, whole
