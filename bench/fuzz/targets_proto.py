"""Fuzz targets of the handshake decoders and the transport (DATA / CONTROL) header.

    handshake    decode_init / decode_response / decode_confirm / decode_cookie_reply,
                 init_size_ok, CookieChecker.check_mac1, open_cookie_reply (enclave.proto.wire,
                 enclave.proto.cookie): only WireError may escape a decoder, a decoded message
                 encodes back to the same bytes, MAC1 and cookie checks never raise
    data_header  unpack_transport_header, decode_control (Python), and the compiled pieces the
                 receive path runs on the same bytes: ReplayWindow (check before, update after)
                 and AeadKey.open_batch on the datagram in place (header = AD); a fuzzed
                 datagram never authenticates, the window never accepts a counter twice
"""

from __future__ import annotations

import random
from array import array

from bench.fuzz.harness import Factory, Reader
from bench.fuzz.samples import exchange
from enclave import _fastpath as fp
from enclave.proto.cookie import CookieChecker, open_cookie_reply
from enclave.proto.wire import (
    AEAD_TAG_SIZE,
    DATA_HEADER_SIZE,
    INIT_MACS_SIZE,
    MAC_SIZE,
    MSG_CONTROL,
    MSG_DATA,
    WireError,
    decode_confirm,
    decode_control,
    decode_cookie_reply,
    decode_init,
    decode_response,
    init_size_ok,
    message_type,
    unpack_transport_header,
)


class HandshakeTarget:
    max_len = 1600

    def __init__(self, seed: int) -> None:
        ex = exchange()
        self.samples = [*ex.all(), ex.cookie_reply]
        self.responder_key = ex.b.public_key
        rng = random.Random(seed)
        self.checker = CookieChecker(self.responder_key, rng.randbytes)
        init = ex.by_type[6][0]
        self.mac1 = init[-INIT_MACS_SIZE : -MAC_SIZE]

    def seeds(self) -> list[bytes]:
        return [bytes([0]) + s for s in self.samples]

    def one(self, data: bytes) -> None:
        msg = Reader(data).rest_or_edit(self.samples)
        try:
            message_type(msg)
        except WireError:
            pass
        for decode in (decode_init, decode_response, decode_confirm, decode_cookie_reply):
            try:
                got = decode(msg)
            except WireError:
                continue
            assert got.encode() == msg, f"{decode.__name__} does not round-trip"
            if decode is decode_init:
                assert init_size_ok(msg)
        assert isinstance(init_size_ok(msg), bool)
        assert isinstance(self.checker.check_mac1(msg), bool)
        opened = open_cookie_reply(msg, self.responder_key, self.mac1)
        assert opened is None or len(opened[1]) == MAC_SIZE

    def state(self) -> dict[str, tuple[int, int]]:
        return {}


class DataHeaderTarget:
    max_len = 2048

    def __init__(self, seed: int) -> None:
        ex = exchange()
        self.samples = ex.by_type[MSG_DATA] + ex.by_type[MSG_CONTROL]
        self.window = fp.ReplayWindow()
        self.key = fp.AeadKey("chacha20poly1305", random.Random(seed).randbytes(32))
        self.accepted = 0

    def seeds(self) -> list[bytes]:
        return [bytes([0]) + s for s in self.samples]

    def one(self, data: bytes) -> None:
        msg = Reader(data).rest_or_edit(self.samples)
        try:
            hdr = unpack_transport_header(msg)
        except WireError:
            return
        assert hdr.msg_type in (MSG_DATA, MSG_CONTROL)
        try:
            decode_control(msg[DATA_HEADER_SIZE:-AEAD_TAG_SIZE])
        except WireError:
            pass
        counter = hdr.counter
        if self.window.check(counter):
            buf = bytearray(msg)
            flags = self.key.open_batch(
                buf, array("I", [0]), array("I", [len(msg) - DATA_HEADER_SIZE]),
                array("Q", [counter]), DATA_HEADER_SIZE,
            )
            assert flags == bytearray(b"\x00"), "a fuzzed datagram authenticated"
            if self.window.update(counter):  # as if it had (exercise the window)
                self.accepted += 1
                assert not self.window.check(counter), "the window accepts a counter twice"

    def state(self) -> dict[str, tuple[int, int]]:
        return {}


FACTORIES: dict[str, Factory] = {"handshake": HandshakeTarget, "data_header": DataHeaderTarget}
