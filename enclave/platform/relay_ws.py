"""The platform's relay over TLS: the UDP relay's job on a WebSocket of the HTTPS port.

    agent X  wss://platform/v1/relay (TLS key pinned by the agent)              agent Y
    REGISTER(ch=7, ticket X->Y)  --> ticket MAC/expiry ok, X and Y allowed? else silence
                              <-- REGISTERED(ch=7, lifetime)
                                                  (Y does the same on its own WebSocket, ch=3)
    DATA(ch=7, batch)            --> reg[conn X, 7] = X->Y, reg(Y->X) live
                                     --> DATA(ch=3, batch) on Y's WebSocket: the header is
                                         swapped, the batch is forwarded as it came

Wire format: enclave.proto.relay_batch (the UDP relay's 8-byte header, then a ticket, a
lifetime or a length-prefixed batch; no JSON).  The relay never looks inside a batch: per
WebSocket message in, one dictionary look-up, one copy behind the other side's headers, one
message out, however many datagrams it holds.  aiohttp answers the upgrade (no per-message
deflate: the payload is ciphertext); then enclave.wslink.WsLink takes the connection over: the
TLS layer decrypts into its buffer, the message is forwarded from there, no task or await per
message.

Backpressure: while a peer's connection's write buffer is over its high-water mark (the queue
for it stands), bulk datagrams of a message for it are dropped as CoDel says, with the time
the buffer has been over the mark as the sojourn (enclave.relay_bulk: an inner TCP stream backs
off, as behind a router's managed queue) and the rest (ACKs, pings, handshakes) goes out;
counted in `dropped_bulk`.  Only when that buffer is over HARD_WATER
anyway does the sender's connection stop reading until it drains (TCP pushes back to the
sender: that also holds the sender's small datagrams, so it is the last resort); a peer that
stays full for SEND_TIMEOUT seconds is closed.

Rules, as for the UDP relay (enclave.platform.relay): tickets are the same platform-minted
"src may relay to dst" tickets, so data flows only between two live registrations whose tickets
name each other (mutual intent); only systems the control hub allows may register or be relayed
to (allow_only: a revoked system's registrations are dropped and its WebSocket closed at once);
a connection that has not registered within REGISTER_DEADLINE seconds is closed; registrations
per connection and messages per second per registration are bounded; anything malformed or
unauthenticated gets silence.  A connection with a valid registration leaves the front door's
unauthenticated caps (as the control channel does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from enclave import _fastpath as fp
from enclave.platform.frontdoor import FRONT_DOOR, transport_fd
from enclave.platform.tls_buffers import widen_tls_read_buffer
from enclave.proto.ratelimit import TokenBucket
from enclave.proto.relay_batch import MAX_MESSAGE
from enclave.proto.wire import (
    MSG_RELAY_DATA,
    MSG_RELAY_REGISTER,
    MSG_RELAY_REGISTERED,
    RELAY_HEADER_SIZE,
    RelayTicket,
    WireError,
    pack_relay_header,
    unpack_relay_header,
)
from enclave.proto.wsframe import CLOSE_GOING_AWAY, OP_BINARY
from enclave.relay_bulk import codel_drop_bulk
from enclave.wslink import HIGH_WATER, WsLink

log = logging.getLogger("enclave.platform.relay_ws")

REGISTRATION_LIFETIME = 60.0  # a registration not refreshed within this is forgotten
REGISTER_DEADLINE = 10.0  # seconds a new connection has to register once
MAX_CHANNELS_PER_CONN = 1024
MAX_REGISTRATIONS = 65536
DATA_RATE_MESSAGES = 20000.0  # forwarded messages (batches) per second per registration
DATA_BURST_MESSAGES = 4000.0
RELAY_TLS_ENV = "ENCLAVE_PLATFORM_RELAY_TLS"  # HOST:PORT of an extra TLS listener (serve)
SEND_TIMEOUT = 5.0  # a peer's WebSocket that cannot take a message within this is closed
HEARTBEAT = 20.0
CODEL_TARGET_NS = 5_000_000  # CoDel on a peer's standing queue (bulk datagrams for it)
CODEL_INTERVAL_NS = 100_000_000
HARD_WATER = 4 * HIGH_WATER  # a peer's write buffer past which its senders stop being read

TicketCheck = Callable[[bytes, float], "RelayTicket | None"]


@dataclass(eq=False)
class _Conn:
    link: WsLink
    channels: dict[int, _WsRegistration] = field(default_factory=dict)
    waiting: set[_Conn] = field(default_factory=set)  # senders paused until this one drains
    stall: asyncio.TimerHandle | None = None  # closes this one if it stays full
    codel: fp.CoDel = field(default_factory=lambda: fp.CoDel(CODEL_TARGET_NS, CODEL_INTERVAL_NS))
    forwarded: int = 0  # DATA messages from this connection forwarded
    forwarded_bytes: int = 0


@dataclass(eq=False)
class _WsRegistration:
    src: str
    dst: str
    conn: _Conn
    channel: int
    expires: float
    bucket: TokenBucket


class RelayWs:
    """Registrations of relay-over-TLS connections and the forwarding between them (the
    WebSocket handler feeds it whole messages; sans-I/O apart from the sends it returns)."""

    def __init__(self, verify: TicketCheck, *, max_registrations: int = MAX_REGISTRATIONS
                 ) -> None:
        self._verify = verify
        self._max = max_registrations
        self._by_pair: dict[tuple[str, str], _WsRegistration] = {}
        self._allowed: frozenset[str] | None = None
        self._conns: set[_Conn] = set()
        self.forwarded = 0  # messages
        self.forwarded_bytes = 0  # batch bytes (without the header)
        self.dropped = 0
        self.dropped_bulk = 0  # bulk datagrams dropped for peers whose queue stood

    def __len__(self) -> int:
        return len(self._by_pair)

    def allow_only(self, names: set[str] | frozenset[str]) -> list[WsLink]:
        """Only these systems may register or be relayed to from now on; registrations naming
        anyone else are dropped at once, and the WebSockets left with no registration because
        of it are closed (revoked systems are cut).  Returns those."""
        self._allowed = frozenset(names)
        cut: list[WsLink] = []
        for reg in [r for r in self._by_pair.values() if not self._permitted(r.src, r.dst)]:
            self._drop(reg)
            if not reg.conn.channels:
                cut.append(reg.conn.link)
                reg.conn.link.close(CLOSE_GOING_AWAY)
        return cut

    def _permitted(self, src: str, dst: str) -> bool:
        return self._allowed is None or (src in self._allowed and dst in self._allowed)

    def _drop(self, reg: _WsRegistration) -> None:
        if reg.conn.channels.get(reg.channel) is reg:
            del reg.conn.channels[reg.channel]
        if self._by_pair.get((reg.src, reg.dst)) is reg:
            del self._by_pair[(reg.src, reg.dst)]

    def open(self, conn: _Conn) -> None:
        """A new connection (close_all reaches it until close())."""
        self._conns.add(conn)

    def close(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        for reg in list(conn.channels.values()):
            self._drop(reg)

    def close_all(self) -> None:
        """Close every connection (the platform shutting down: 1001 going away)."""
        for conn in list(self._conns):
            conn.link.close(CLOSE_GOING_AWAY)

    def receive(self, conn: _Conn, data: bytes | memoryview, now: float
                ) -> tuple[_Conn, bytes, bytes | memoryview] | None:
        """One binary message from `conn`: where to send what, as a header and a body to send
        behind it (a view into `data`: send it before `data` changes); None: nothing, silently."""
        try:
            kind, channel = unpack_relay_header(bytes(data[:RELAY_HEADER_SIZE]))
        except WireError:
            self.dropped += 1
            return None
        if kind == MSG_RELAY_DATA:
            return self._forward(conn, data, channel, now)
        if kind == MSG_RELAY_REGISTER:
            return self._register(conn, data, channel, now)
        self.dropped += 1
        return None

    def _register(self, conn: _Conn, data: bytes | memoryview, channel: int, now: float
                  ) -> tuple[_Conn, bytes, bytes] | None:
        ticket = self._verify(bytes(data[RELAY_HEADER_SIZE:]), now)
        if ticket is None or not self._permitted(ticket.src, ticket.dst):
            self.dropped += 1
            return None
        old = self._by_pair.get((ticket.src, ticket.dst))
        if old is not None:
            self._drop(old)  # refresh, or the system reconnected
        clash = conn.channels.get(channel)
        if clash is not None:
            self._drop(clash)
        if len(conn.channels) >= MAX_CHANNELS_PER_CONN or len(self._by_pair) >= self._max:
            self.expire(now)
            if len(conn.channels) >= MAX_CHANNELS_PER_CONN or len(self._by_pair) >= self._max:
                self.dropped += 1
                return None
        expires = min(now + REGISTRATION_LIFETIME, float(ticket.expires))
        reg = _WsRegistration(ticket.src, ticket.dst, conn, channel, expires,
                              TokenBucket(DATA_RATE_MESSAGES, DATA_BURST_MESSAGES))
        conn.channels[channel] = reg
        self._by_pair[(ticket.src, ticket.dst)] = reg
        lifetime = max(1, int(expires - now))
        return conn, pack_relay_header(MSG_RELAY_REGISTERED, channel), lifetime.to_bytes(
            4, "little")

    def _forward(self, conn: _Conn, data: bytes | memoryview, channel: int, now: float
                 ) -> tuple[_Conn, bytes, memoryview] | None:
        reg = conn.channels.get(channel)
        if reg is None or reg.expires <= now or len(data) <= RELAY_HEADER_SIZE:
            self.dropped += 1
            return None
        other = self._by_pair.get((reg.dst, reg.src))
        if other is None or other.expires <= now or not reg.bucket.allow(now):
            self.dropped += 1
            return None
        self.forwarded += 1
        self.forwarded_bytes += len(data) - RELAY_HEADER_SIZE
        conn.forwarded += 1
        conn.forwarded_bytes += len(data) - RELAY_HEADER_SIZE
        # the other side's header, then the batch as it came (a view, not a slice: the one
        # copy is the send's, joining the WebSocket header, this header and the batch)
        return other.conn, pack_relay_header(MSG_RELAY_DATA, other.channel), memoryview(
            data)[RELAY_HEADER_SIZE:]

    def expire(self, now: float) -> None:
        for reg in [r for r in self._by_pair.values() if r.expires <= now]:
            self._drop(reg)


async def serve_ws(relay: RelayWs, request: web.Request,
                   clock: Callable[[], float] = time.time) -> web.StreamResponse:
    """The WebSocket handler: aiohttp answers the upgrade, a WsLink takes the connection over
    and feeds every binary message to `relay`, sending what it says; returns when the
    connection is gone."""
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, compress=False)
    await ws.prepare(request)
    transport = request.transport
    if transport is None or transport.is_closing():
        return ws
    limits = request.app.get(FRONT_DOOR)
    conn: _Conn | None = None
    authenticated = False

    def on_message(op: int, payload: memoryview | bytes) -> None:
        nonlocal authenticated
        assert conn is not None
        if op != OP_BINARY:
            return  # text: ignored (silence)
        out = relay.receive(conn, payload, clock())
        if out is None:
            return
        dst, head, body = out
        if dst is conn and not authenticated:
            authenticated = True  # a valid ticket: no longer an anonymous connection
            if limits is not None:
                limits.authenticated(transport_fd(transport))
        parts: Sequence[bytes | memoryview] = (body,)
        if dst.link.paused:  # its queue stands: CoDel on bulk, the rest goes
            now = time.monotonic_ns()
            kept, _small, dropped = codel_drop_bulk(body, dst.codel, now - dst.link.paused_ns, now)
            if dropped:
                relay.dropped_bulk += dropped
                if not kept:
                    return
                parts = kept
        if not dst.link.send(head, *parts) or not dst.link.paused:
            return
        if dst.stall is None:  # (closed if it stays full)
            dst.stall = asyncio.get_running_loop().call_later(SEND_TIMEOUT, dst.link.abort)
        if dst.link.buffered() > HARD_WATER:  # full even so: stop reading here until it drains
            dst.waiting.add(conn)
            transport.pause_reading()

    def on_writable(c: _Conn) -> None:
        if c.stall is not None:
            c.stall.cancel()
            c.stall = None
        waiting, c.waiting = c.waiting, set()
        for src in waiting:
            if src.link.transport is not None and not src.link.closing:
                src.link.transport.resume_reading()

    link = WsLink(on_message, client=False, max_message=MAX_MESSAGE, heartbeat=HEARTBEAT)
    conn = _Conn(link)
    link.on_writable = lambda: on_writable(conn)
    loop = asyncio.get_running_loop()
    deadline = loop.call_later(REGISTER_DEADLINE,
                               lambda: None if authenticated else link.close(CLOSE_GOING_AWAY))
    relay.open(conn)
    link.take_over(transport)  # aiohttp reads nothing more of this connection
    widen_tls_read_buffer(transport)  # bulk data: 256 KiB per read, not the control's 32
    try:
        await link.done.wait()
    finally:
        deadline.cancel()
        on_writable(conn)  # anyone waiting on us reads again
        if conn.stall is not None:
            conn.stall.cancel()
        relay.close(conn)
        link.abort()
        if conn.forwarded:
            log.info("relay over TLS: a connection closed after forwarding %d messages, %d "
                     "bytes (%d on average)", conn.forwarded, conn.forwarded_bytes,
                     conn.forwarded_bytes // conn.forwarded)
    return ws
