"""Fuzz target of the relay over TLS (WebSocket on the platform's HTTPS port) and its batch format.

    relay_tls   RelayWs.receive (enclave.platform.relay_ws) with four connections: raw
                messages, REGISTERs with a valid ticket (minted with the relay's key) or a
                changed one, DATA on live channels with fuzzed batches; the agent's side,
                unpack_batch (enclave.proto.relay_batch), on the same bytes. Asserted: only a
                valid ticket gets an answer (REGISTERED, 12 bytes), DATA goes out as it came
                (same length, header swapped) to another connection, a batch unpack_batch
                accepts packs back to the same bytes. Bounds: registrations <= max_registrations
                (built small so it is reached), channels per connection <= MAX_CHANNELS_PER_CONN
    ws_frames   enclave.proto.wsframe.FrameReader (the relay's WebSocket frames after the
                upgrade, both sides) fed the input in reads of fuzzed sizes, masked (platform)
                or not (agent). Asserted: it returns messages or raises WsError with 1002 / 1009,
                nothing else; after WsError it returns nothing more. Bounds: its buffer <=
                max_message + 14 + MIN_READ (max_message built small so it is reached)
"""

from __future__ import annotations

import random

from bench.fuzz.harness import Factory, Reader
from enclave.platform import relay_ws
from enclave.platform.relay import mint_ticket, verify_ticket
from enclave.proto import wire
from enclave.proto.relay_batch import MAX_MESSAGE, pack_batch, unpack_batch
from enclave.proto.wsframe import (
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    MAX_HEADER,
    MIN_READ,
    ZERO_MASK,
    FrameReader,
    WsError,
    frame_header,
)
from enclave.wslink import WsLink

T0 = 1_750_000_000.0
MAX_REGS = 8  # below the 12 ticket pairs of NAMES: the bound is reached
NAMES = ("sys-a", "sys-b", "sys-c", "sys-d")


class RelayTlsTarget:
    max_len = 2048

    def __init__(self, seed: int) -> None:
        self.key = random.Random(seed).randbytes(32)
        self.relay = relay_ws.RelayWs(lambda raw, now: verify_ticket(self.key, raw, now),
                                      max_registrations=MAX_REGS)
        # the core only hands the connection back as "send here": unconnected links do
        self.conns = [relay_ws._Conn(WsLink(lambda op, m: None, client=False,
                                            max_message=MAX_MESSAGE)) for _ in range(4)]
        self.now = T0

    def seeds(self) -> list[bytes]:
        return [bytes([1, 0, 1, 0, 1, 2]), bytes([2, 1, 1]) + pack_batch([b"x" * 40, b"y"]),
                bytes([0, 0]) + wire.pack_relay_header(wire.MSG_RELAY_DATA, 1) + b"\x00\x01z"]

    def one(self, data: bytes) -> None:
        r = Reader(data)
        mode = r.u8() % 3
        conn = self.conns[r.u8() % len(self.conns)]
        channel = 1 + r.u8() % 8
        self.now += 0.01
        valid = False
        if mode == 0:
            msg = r.rest()
        elif mode == 1:
            src, dst = NAMES[r.u8() % 4], NAMES[r.u8() % 4]
            ticket = mint_ticket(self.key, src, dst, int(self.now) + r.u8() * 20 - 100)
            msg = wire.pack_relay_header(wire.MSG_RELAY_REGISTER, channel) + ticket
            if r.u8() % 4 == 0:
                msg = r.edits(msg, 2)
            valid = True
        else:
            msg = wire.pack_relay_header(wire.MSG_RELAY_DATA, channel) + r.rest()
        frames = unpack_batch(msg, wire.RELAY_HEADER_SIZE)
        if frames is not None:
            assert pack_batch(frames) == msg[wire.RELAY_HEADER_SIZE :]
        out = self.relay.receive(conn, msg, self.now)
        if out is not None:
            dst, head, body = out
            reply = head + bytes(body)  # what the send joins into one WebSocket message
            if reply[0] == wire.MSG_RELAY_REGISTERED:
                assert valid and dst is conn and len(reply) == wire.RELAY_REGISTERED_SIZE
            else:
                assert reply[0] == wire.MSG_RELAY_DATA and len(reply) == len(msg)
                assert reply[wire.RELAY_HEADER_SIZE :] == msg[wire.RELAY_HEADER_SIZE :]
        if r.u8() == 255:
            self.relay.close(self.conns[r.u8() % len(self.conns)])
        if r.u8() == 254:
            self.relay.expire(self.now)

    def state(self) -> dict[str, tuple[int, int]]:
        out = {"registrations": (len(self.relay), MAX_REGS)}
        for i, c in enumerate(self.conns):
            out[f"channels of connection {i}"] = (len(c.channels), relay_ws.MAX_CHANNELS_PER_CONN)
        return out


WS_MAX = 4096  # the reader's max_message here: small, so the bound is reached


class WsFramesTarget:
    max_len = 4 * WS_MAX

    def __init__(self, seed: int) -> None:
        self.biggest = 0

    def seeds(self) -> list[bytes]:
        return [bytes([1, 7]) + frame_header(2, 3, ZERO_MASK) + b"abc",
                bytes([0, 3]) + frame_header(1, 2) + b"hi" + frame_header(9, 0),
                bytes([1, 200]) + b"\x02\x80" + ZERO_MASK + b"x" + b"\x80\x80" + ZERO_MASK + b"y"]

    def one(self, data: bytes) -> None:
        r = Reader(data)
        masked = r.u8() % 2 == 1
        chunk = 1 + r.u8()
        stream = r.rest()
        reader = FrameReader(masked=masked, max_message=WS_MAX, initial=256)
        failed = False
        pos = 0
        while pos < len(stream):
            room = reader.buffer()
            self.biggest = max(self.biggest, len(room) + reader.pending)
            n = min(len(room), chunk, len(stream) - pos)
            room[:n] = stream[pos:pos + n]
            del room
            reader.filled(n)
            pos += n
            try:
                for op, payload in reader.messages():
                    assert not failed and len(payload) <= WS_MAX and op in (1, 2, 8, 9, 10)
            except WsError as exc:
                assert exc.code in (CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG)
                failed = True
                assert reader.messages() == []

    def state(self) -> dict[str, tuple[int, int]]:
        return {"reader buffer": (self.biggest, WS_MAX + MAX_HEADER + MIN_READ)}


FACTORIES: dict[str, Factory] = {"relay_tls": RelayTlsTarget, "ws_frames": WsFramesTarget}
