"""enclave.proto.wsframe: WebSocket frames read straight into one buffer, in any split of reads;
malformed input gets the RFC 6455 close code, never a crash or an unbounded buffer."""

from __future__ import annotations

import os

import pytest

from enclave.proto.wsframe import (
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    INITIAL_BUFFER,
    MAX_HEADER,
    MIN_READ,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    ZERO_MASK,
    FrameReader,
    WsError,
    frame_header,
    unmask,
)

MAX = 1 << 20


def frame(op: int, payload: bytes, *, mask: bytes | None = None, fin: bool = True) -> bytes:
    head = bytearray(frame_header(op, len(payload), mask))
    if not fin:
        head[0] &= 0x7F
    body = payload if mask is None or mask == ZERO_MASK else unmask(payload, mask)
    return bytes(head) + body


def feed(reader: FrameReader, data: bytes, chunk: int) -> list[tuple[int, bytes]]:
    """Read `data` into the reader `chunk` bytes at a time (at most what buffer() offers)."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        room = reader.buffer()
        n = min(len(room), chunk, len(data) - pos)
        room[:n] = data[pos:pos + n]
        del room
        reader.filled(n)
        pos += n
        out += [(op, bytes(p)) for op, p in reader.messages()]
    return out


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 22])
def test_any_split_of_reads_gives_the_same_messages(chunk: int) -> None:
    payloads = [b"", b"x" * 125, b"y" * 126, os.urandom(300)]
    if chunk > 1000:  # partial reads of big frames (one byte at a time would take long)
        payloads += [os.urandom(65535), os.urandom(65536), os.urandom(MAX)]
    mask = os.urandom(4)
    stream = b"".join(frame(OP_BINARY, p, mask=mask) for p in payloads)
    reader = FrameReader(masked=True, max_message=MAX)
    assert feed(reader, stream, chunk) == [(OP_BINARY, p) for p in payloads]
    assert reader.pending == 0


def test_zero_mask_payload_is_a_view_into_the_buffer_and_others_are_unmasked() -> None:
    reader = FrameReader(masked=True, max_message=MAX)
    data = frame(OP_BINARY, b"ciphertext", mask=ZERO_MASK) + frame(
        OP_BINARY, b"masked!", mask=b"\x01\x02\x03\x04")
    room = reader.buffer()
    room[:len(data)] = data
    reader.filled(len(data))
    (op1, p1), (op2, p2) = reader.messages()
    assert op1 == op2 == OP_BINARY
    assert isinstance(p1, memoryview) and bytes(p1) == b"ciphertext"
    assert p2 == b"masked!"
    assert frame(OP_BINARY, b"masked!", mask=b"\x01\x02\x03\x04")[6:] != b"masked!"


def test_client_side_reads_unmasked_frames() -> None:
    reader = FrameReader(masked=False, max_message=MAX)
    assert feed(reader, frame(OP_TEXT, b"hi") + frame(OP_PING, b"p"), 3) == [
        (OP_TEXT, b"hi"), (OP_PING, b"p")]


def test_fragments_are_joined_and_control_frames_pass_between_them() -> None:
    m = b"\x00" * 4
    stream = (frame(OP_BINARY, b"one ", mask=m, fin=False)
              + frame(OP_PING, b"!", mask=m)
              + frame(OP_CONTINUATION, b"two ", mask=m, fin=False)
              + frame(OP_CONTINUATION, b"three", mask=m)
              + frame(OP_BINARY, b"next", mask=m))
    reader = FrameReader(masked=True, max_message=MAX)
    assert feed(reader, stream, 5) == [(OP_PING, b"!"), (OP_BINARY, b"one two three"),
                                       (OP_BINARY, b"next")]


@pytest.mark.parametrize(("data", "code"), [
    (b"\xc2\x80" + ZERO_MASK, CLOSE_PROTOCOL_ERROR),  # RSV1 (compression) not agreed
    (frame(OP_BINARY, b"x"), CLOSE_PROTOCOL_ERROR),  # unmasked from a client
    (frame(0x3, b"x", mask=ZERO_MASK), CLOSE_PROTOCOL_ERROR),  # reserved opcode
    (frame(OP_PING, b"p" * 126, mask=ZERO_MASK), CLOSE_PROTOCOL_ERROR),  # long control
    (frame(OP_CLOSE, b"\x03\xe8", mask=ZERO_MASK, fin=False), CLOSE_PROTOCOL_ERROR),
    (frame(OP_CONTINUATION, b"x", mask=ZERO_MASK), CLOSE_PROTOCOL_ERROR),  # nothing to continue
    (frame(OP_BINARY, b"a", mask=ZERO_MASK, fin=False) + frame(OP_BINARY, b"b", mask=ZERO_MASK),
     CLOSE_PROTOCOL_ERROR),  # a new message inside a fragmented one
    (b"\x82\xff" + (1 << 62).to_bytes(8, "big"), CLOSE_TOO_BIG),  # header alone: too big
    (b"\x82\xff" + (MAX + 1).to_bytes(8, "big") + ZERO_MASK, CLOSE_TOO_BIG),
    (frame(OP_BINARY, b"a" * (MAX // 2 + 1), mask=ZERO_MASK, fin=False)
     + frame(OP_CONTINUATION, b"b" * (MAX // 2 + 1), mask=ZERO_MASK), CLOSE_TOO_BIG),
])
def test_malformed_input_gets_its_close_code_and_nothing_more(data: bytes, code: int) -> None:
    reader = FrameReader(masked=True, max_message=MAX)
    with pytest.raises(WsError) as err:
        feed(reader, data + frame(OP_BINARY, b"after", mask=ZERO_MASK), 1 << 22)
    assert err.value.code == code
    assert reader.messages() == []  # spent: nothing after the error is read


def test_masked_frame_to_a_client_is_a_protocol_error() -> None:
    reader = FrameReader(masked=False, max_message=MAX)
    with pytest.raises(WsError) as err:
        feed(reader, frame(OP_BINARY, b"x", mask=ZERO_MASK), 100)
    assert err.value.code == CLOSE_PROTOCOL_ERROR


def test_the_buffer_grows_to_the_frame_and_no_further() -> None:
    reader = FrameReader(masked=True, max_message=MAX)
    assert len(reader.buffer()) == INITIAL_BUFFER
    # a header announcing the largest frame allowed: room for it, not for more
    head = frame_header(OP_BINARY, MAX, ZERO_MASK)
    room = reader.buffer()
    room[:len(head)] = head
    del room
    reader.filled(len(head))
    assert reader.messages() == []
    assert len(reader.buffer()) <= MAX + MAX_HEADER + MIN_READ
    assert len(reader.buffer()) >= MAX  # the whole payload fits behind the header


@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536])
def test_frame_header_length_forms(n: int) -> None:
    head = frame_header(OP_BINARY, n)
    assert len(head) == (2 if n < 126 else 4 if n < 65536 else 10)
    reader = FrameReader(masked=False, max_message=MAX)
    assert feed(reader, head + b"z" * n, 1 << 20) == [(OP_BINARY, b"z" * n)]
