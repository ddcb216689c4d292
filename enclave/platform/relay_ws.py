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
WebSocket message in, one dictionary look-up, one copy behind the other side's header, one
message out, however many datagrams it holds.  No per-message deflate (the
payload is ciphertext), no task per send.

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
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from enclave.platform.frontdoor import FRONT_DOOR, transport_fd
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

TicketCheck = Callable[[bytes, float], "RelayTicket | None"]


@dataclass(eq=False)
class _Conn:
    ws: web.WebSocketResponse
    channels: dict[int, _WsRegistration] = field(default_factory=dict)


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
        self.forwarded = 0  # messages
        self.forwarded_bytes = 0  # batch bytes (without the header)
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._by_pair)

    def allow_only(self, names: set[str] | frozenset[str]) -> list[web.WebSocketResponse]:
        """Only these systems may register or be relayed to from now on; registrations naming
        anyone else are dropped at once.  Returns the WebSockets left with no registration
        because of it (the caller closes them: revoked systems are cut)."""
        self._allowed = frozenset(names)
        cut: list[web.WebSocketResponse] = []
        for reg in [r for r in self._by_pair.values() if not self._permitted(r.src, r.dst)]:
            self._drop(reg)
            if not reg.conn.channels:
                cut.append(reg.conn.ws)
        return cut

    def _permitted(self, src: str, dst: str) -> bool:
        return self._allowed is None or (src in self._allowed and dst in self._allowed)

    def _drop(self, reg: _WsRegistration) -> None:
        if reg.conn.channels.get(reg.channel) is reg:
            del reg.conn.channels[reg.channel]
        if self._by_pair.get((reg.src, reg.dst)) is reg:
            del self._by_pair[(reg.src, reg.dst)]

    def close(self, conn: _Conn) -> None:
        for reg in list(conn.channels.values()):
            self._drop(reg)

    def receive(self, conn: _Conn, data: bytes, now: float
                ) -> tuple[web.WebSocketResponse, bytes] | None:
        """One binary message from `conn`: what to send where (None: nothing, silently)."""
        try:
            kind, channel = unpack_relay_header(data)
        except WireError:
            self.dropped += 1
            return None
        if kind == MSG_RELAY_DATA:
            return self._forward(conn, data, channel, now)
        if kind == MSG_RELAY_REGISTER:
            return self._register(conn, data, channel, now)
        self.dropped += 1
        return None

    def _register(self, conn: _Conn, data: bytes, channel: int, now: float
                  ) -> tuple[web.WebSocketResponse, bytes] | None:
        ticket = self._verify(data[RELAY_HEADER_SIZE:], now)
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
        return conn.ws, pack_relay_header(MSG_RELAY_REGISTERED, channel) + lifetime.to_bytes(
            4, "little")

    def _forward(self, conn: _Conn, data: bytes, channel: int, now: float
                 ) -> tuple[web.WebSocketResponse, bytes] | None:
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
        # one copy: the other side's header, then the batch as it came (a view, not a slice)
        return other.conn.ws, pack_relay_header(MSG_RELAY_DATA, other.channel) + memoryview(
            data)[RELAY_HEADER_SIZE:]

    def expire(self, now: float) -> None:
        for reg in [r for r in self._by_pair.values() if r.expires <= now]:
            self._drop(reg)


async def serve_ws(relay: RelayWs, request: web.Request,
                   clock: Callable[[], float] = time.time) -> web.StreamResponse:
    """The WebSocket handler: feed every binary message to `relay`, send what it says."""
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=HEARTBEAT, compress=False)
    await ws.prepare(request)
    conn = _Conn(ws)
    limits = request.app.get(FRONT_DOOR)
    authenticated = False
    deadline = asyncio.get_running_loop().time() + REGISTER_DEADLINE
    try:
        while True:
            timeout = None if authenticated else deadline - asyncio.get_running_loop().time()
            if timeout is not None and timeout <= 0:
                break
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                break
            if msg.type != WSMsgType.BINARY:
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                                WSMsgType.ERROR):
                    break
                continue  # text: ignored (silence)
            now = clock()
            out = relay.receive(conn, msg.data, now)
            if out is None:
                continue
            dst, payload = out
            if dst is ws and not authenticated:
                authenticated = True  # a valid ticket: no longer an anonymous connection
                if limits is not None:
                    limits.authenticated(transport_fd(request.transport))
            if dst.closed:
                continue
            try:
                async with asyncio.timeout(SEND_TIMEOUT):
                    await dst.send_bytes(payload)
            except (TimeoutError, ConnectionError, RuntimeError):
                if dst is not ws:  # the other side is stuck: its own handler ends it
                    with contextlib.suppress(Exception):
                        await dst.close()
    finally:
        relay.close(conn)
        if not ws.closed:
            await ws.close()
    return ws
