"""Fuzz targets of the stream framing, the relay (both ends) and the discovery reflector.

    tcp_framing   FrameDecoder.feed (enclave.agent.transport_tcp) on a stream cut into
                  fuzz-chosen chunks: only ValueError (broken framing) escapes, frames are
                  1..65535 bytes, and what the decoder holds back stays below one frame
    relay         RelayCore.receive (enclave.platform.relay) from fuzz-chosen sources: raw
                  datagrams, REGISTERs with a valid ticket (minted with the core's key) and a
                  fuzzed cookie/channel, DATA on live channels; unpack_relay_header and
                  decode_relay_ticket on the same bytes. Nothing answers a datagram without a
                  valid ticket, replies are never larger than the request, registrations stay
                  within max_registrations
    relay_client  RelayClient.receive (enclave.agent.relay_client) with three live channels:
                  raw datagrams and fuzzed CHALLENGE / REGISTERED / DATA on those channels,
                  from the relay's address or another; its channels stay the ones added
    reflector     Reflector.answer (enclave.platform.discovery): raw datagrams, requests of
                  every type (16, 18 ALT_PORT, 19 ALT_ADDR, others) signed by a known system
                  with fuzzed fields, and mutations of signed requests; replies (40 bytes) are
                  smaller than requests and only go to correctly signed, fresh ones; the nonce
                  cache and per-system buckets stay bounded. The agent's side: decode_reflect_reply
                  and Discovery.feed on the same bytes
"""

from __future__ import annotations

import random

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.fuzz.harness import Factory, Reader
from enclave.agent.discovery import Discovery
from enclave.agent.relay_client import RelayClient
from enclave.agent.transport_tcp import FRAME_HEADER, MAX_FRAME, FrameDecoder, frame
from enclave.cert.keys import public_key_raw, sign
from enclave.platform import discovery as refl
from enclave.platform.relay import RelayCore, mint_ticket
from enclave.proto import wire

T0 = 1_750_000_000.0  # the simulated clock's start (unix seconds)


class TcpFramingTarget:
    max_len = 4096

    def __init__(self, seed: int) -> None:
        self.decoder = FrameDecoder()
        self.held = 0

    def seeds(self) -> list[bytes]:
        return [bytes([3]) + frame(b"\x04\x00\x00\x00" + bytes(40)) * 3, bytes([0, 0, 0, 1])]

    def one(self, data: bytes) -> None:
        r = Reader(data)
        chunk = 1 + r.u8() % 64
        stream = r.rest()
        if len(stream) % 7 == 0:  # now and then a fresh stream (a new connection)
            self.decoder = FrameDecoder()
        for at in range(0, len(stream), chunk):
            try:
                frames = self.decoder.feed(stream[at : at + chunk])
            except ValueError:
                self.decoder = FrameDecoder()  # the stream is closed
                return
            for f in frames:
                assert 0 < len(f) <= MAX_FRAME
        # what is held back: less than a header, or less than the frame it announces
        probe = self.decoder.feed(b"")
        assert probe == []

    def state(self) -> dict[str, tuple[int, int]]:
        return {"held-back bytes": (len(self.decoder._buf), FRAME_HEADER + MAX_FRAME)}


RELAY_MAX = 8  # max_registrations of the fuzzed core: below the 12 ticket pairs, so it is reached


class RelayTarget:
    max_len = 512

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.key = rng.randbytes(32)
        self.core = RelayCore(self.key, max_registrations=RELAY_MAX)
        self.now = T0
        self.names = ["sys-a", "sys-b", "sys-c", "sys-d"]

    def _ticket(self, r: Reader) -> bytes:
        src = self.names[r.u8() % 4]
        dst = self.names[r.u8() % 4]
        return mint_ticket(self.key, src, dst, int(self.now) + r.u8() * 20 - 100)

    def seeds(self) -> list[bytes]:
        return [bytes([1, 0, 1, 0, 1, 2, 60]), bytes([2, 0, 1, 0, 1, 2, 60]), bytes([0]) * 9]

    def one(self, data: bytes) -> None:
        r = Reader(data)
        mode = r.u8() % 4
        addr = (f"198.18.7.{r.u8() % 16}", 4000 + r.u8() % 8)
        channel = r.u8() % 8 if r.u8() % 8 else r.uint(4)
        self.now += 0.01
        valid_ticket = False
        if mode == 0:
            msg = r.rest()
        elif mode in (1, 2):  # REGISTER with a valid ticket; mode 2 answers the challenge
            ticket = self._ticket(r)
            cookie = (self.core.cookie(addr, channel, self.now) if mode == 2
                      else r.take(wire.RELAY_COOKIE_SIZE).ljust(wire.RELAY_COOKIE_SIZE, b"\0"))
            msg = wire.pack_relay_header(wire.MSG_RELAY_REGISTER, channel) + cookie + ticket
            msg = r.edits(msg, 2) if r.u8() % 4 == 0 else msg
            valid_ticket = True
        else:  # DATA on a channel that may be live
            msg = wire.pack_relay_header(wire.MSG_RELAY_DATA, channel) + r.rest()
        try:
            kind, ch = wire.unpack_relay_header(msg)
            assert 0 < ch <= wire.RELAY_MAX_CHANNEL and kind in wire.RELAY_MESSAGE_TYPES
        except wire.WireError:
            pass
        try:
            t = wire.decode_relay_ticket(msg[wire.RELAY_HEADER_SIZE + wire.RELAY_COOKIE_SIZE :])
            assert t.encode() == msg[wire.RELAY_HEADER_SIZE + wire.RELAY_COOKIE_SIZE :]
        except wire.WireError:
            pass
        out = self.core.receive(msg, addr, self.now)
        for reply, _dst in out:
            kind = reply[0]
            if kind != wire.MSG_RELAY_DATA:
                assert valid_ticket, "the relay answered a datagram without a valid ticket"
            assert len(reply) <= len(msg), "the relay amplifies"
        if r.u8() == 255:
            self.core.expire(self.now)

    def state(self) -> dict[str, tuple[int, int]]:
        return {"registrations": (len(self.core), RELAY_MAX),
                "system buckets": (len(self.core._limiter), 4096)}


class RelayClientTarget:
    max_len = 256

    def __init__(self, seed: int) -> None:
        self.client = RelayClient()
        self.relay = ("198.18.9.1", 3479)
        self.now = T0
        self.channels = []
        for peer in ("p1", "p2", "p3"):
            self.client.add(peer, self.relay, b"ticket-" + peer.encode(), self.now)
            path = self.client.path_for(peer)
            assert path is not None
            self.channels.append(path.port)

    def seeds(self) -> list[bytes]:
        return [bytes([1, 0, 0, 33]) + bytes(16), bytes([1, 0, 0, 34, 60, 0, 0, 0]),
                bytes([1, 0, 0, 35]) + b"hello"]

    def one(self, data: bytes) -> None:
        r = Reader(data)
        mode = r.u8() % 2
        src = self.relay if r.u8() % 4 else ("198.18.9.2", 3479)
        self.now += 0.05
        if mode == 0:
            msg = r.rest()
        else:
            ch = self.channels[r.u8() % len(self.channels)]
            kind = (wire.MSG_RELAY_CHALLENGE, wire.MSG_RELAY_REGISTERED, wire.MSG_RELAY_DATA,
                    wire.MSG_RELAY_REGISTER)[r.u8() % 4]
            msg = wire.pack_relay_header(kind, ch) + r.rest()
        got = self.client.receive(msg, src, self.now)
        if got is not None:
            assert src == self.relay, "the relay client took a datagram from another address"
            assert got.kind in ("data", "registered", "refreshed", "send")
        self.client.due(self.now)

    def state(self) -> dict[str, tuple[int, int]]:
        live = sum(self.client.path_for(p) is not None for p in ("p1", "p2", "p3"))
        return {"channels": (len(self.client._by_channel), 3), "peers with a path": (live, 3)}


class ReflectorTarget:
    max_len = 256

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.keys = {f"sys{i}": Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
                     for i in range(4)}
        public = {n: public_key_raw(k.public_key()) for n, k in self.keys.items()}
        self.now = T0
        self.reflector = refl.Reflector(public.get, clock=lambda: self.now)
        self.agent = Discovery("sys0", self.keys["sys0"], lambda _d, _a: None,
                               udp_port=51820, tcp_port=51820, on_change=lambda _s: None)
        self.signed = [self._sign(bytes(16), "sys1", t) for t in sorted(wire.REFLECT_REQUEST_TYPES)]

    def _sign(self, nonce: bytes, name: str, msg_type: int, ts: int | None = None) -> bytes:
        ts = int(self.now) if ts is None else ts
        part = wire.reflect_signed_part(ts, nonce, name, msg_type)
        return part + sign(self.keys[name], wire.REFLECT_DOMAIN + part)

    def seeds(self) -> list[bytes]:
        return [bytes([1, 0, 0, 0]) + bytes(16), bytes([2, 0]), bytes([0]) + self.signed[0]]

    def one(self, data: bytes) -> None:
        r = Reader(data)
        mode = r.u8() % 4
        host = f"198.18.{r.u8()}.{r.u8()}" if r.u8() % 8 else f"2001:db8::{r.u8():x}"
        port = r.uint(2)
        self.now += 0.001
        signed = False
        if mode == 0:
            msg = r.rest()
        elif mode == 1:  # a correctly signed request with fuzzed fields
            msg_type = (*sorted(wire.REFLECT_REQUEST_TYPES), wire.MSG_REFLECT_REPLY)[r.u8() % 4]
            name = f"sys{r.u8() % 4}"
            ts = int(self.now) + (r.uint(2) % 700) - 350
            nonce = r.take(16).ljust(16, b"\0")
            if msg_type not in wire.REFLECT_REQUEST_TYPES:
                msg = bytes([msg_type, 0, 0, 0]) + bytes(104)
            else:
                msg = self._sign(nonce, name, msg_type, ts)
                signed = True
        elif mode == 2:
            msg = r.edits(self.signed[r.u8() % len(self.signed)])
        else:  # a reply-shaped datagram to the agent's side
            msg = bytes([wire.MSG_REFLECT_REPLY, 0, 0, 0]) + r.rest()
        try:
            req = wire.decode_reflect_request(msg)
            assert req.msg_type in wire.REFLECT_REQUEST_TYPES and 0 < len(req.name) <= 16
        except wire.WireError:
            pass
        self.reflector.alt_address = r.u8() % 2 == 0
        got = self.reflector.answer(msg, host, port)
        if got is not None:
            assert signed or mode == 2, "the reflector answered an unsigned request"
            assert len(got[0]) == wire.REFLECT_REPLY_SIZE < len(msg)
        try:
            nonce, rhost, rport = wire.decode_reflect_reply(msg)
            assert len(nonce) == 16 and rport > 0 and rhost
            wire.reflect_reply_flags(msg)
        except wire.WireError:
            pass
        assert self.agent.feed(msg, ("198.18.0.1", 3478)) is False  # nothing awaited

    def state(self) -> dict[str, tuple[int, int]]:
        return {"nonces": (len(self.reflector._nonces), refl.NONCE_CACHE),
                "system buckets": (self.reflector.tracked(), refl.MAX_TRACKED)}


FACTORIES: dict[str, Factory] = {
    "tcp_framing": TcpFramingTarget, "relay": RelayTarget, "relay_client": RelayClientTarget,
    "reflector": ReflectorTarget,
}
