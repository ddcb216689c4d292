"""Fuzz target of the relay over TLS (WebSocket on the platform's HTTPS port) and its batch format.

    relay_tls   RelayWs.receive (enclave.platform.relay_ws) with four connections: raw
                messages, REGISTERs with a valid ticket (minted with the relay's key) or a
                changed one, DATA on live channels with fuzzed batches; the agent's side,
                unpack_batch (enclave.proto.relay_batch), on the same bytes. Asserted: only a
                valid ticket gets an answer (REGISTERED, 12 bytes), DATA goes out as it came
                (same length, header swapped) to another connection, a batch unpack_batch
                accepts packs back to the same bytes. Bounds: registrations <= max_registrations
                (built small so it is reached), channels per connection <= MAX_CHANNELS_PER_CONN
"""

from __future__ import annotations

import random
from typing import cast

from aiohttp import web

from bench.fuzz.harness import Factory, Reader
from enclave.platform import relay_ws
from enclave.platform.relay import mint_ticket, verify_ticket
from enclave.proto import wire
from enclave.proto.relay_batch import pack_batch, unpack_batch

T0 = 1_750_000_000.0
MAX_REGS = 8  # below the 12 ticket pairs of NAMES: the bound is reached
NAMES = ("sys-a", "sys-b", "sys-c", "sys-d")


class RelayTlsTarget:
    max_len = 2048

    def __init__(self, seed: int) -> None:
        self.key = random.Random(seed).randbytes(32)
        self.relay = relay_ws.RelayWs(lambda raw, now: verify_ticket(self.key, raw, now),
                                      max_registrations=MAX_REGS)
        # the core only hands the WebSocket back as "send here": any object stands in for one
        self.conns = [relay_ws._Conn(cast(web.WebSocketResponse, object())) for _ in range(4)]
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
            ws, reply = out
            if reply[0] == wire.MSG_RELAY_REGISTERED:
                assert valid and ws is conn.ws and len(reply) == wire.RELAY_REGISTERED_SIZE
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


FACTORIES: dict[str, Factory] = {"relay_tls": RelayTlsTarget}
