"""One WebSocket after its opening handshake, as a lean asyncio BufferedProtocol (the relay over
TLS: the platform's enclave.platform.relay_ws and the agent's enclave.agent.relay_tls).

    platform: aiohttp answers the upgrade (web.WebSocketResponse.prepare), then WsLink.take_over
              makes this protocol the transport's: aiohttp sees nothing more of the connection
    agent:    open_client() connects (TLS), lets the caller check the platform's key, sends the
              HTTP upgrade itself and reads the 101, then frames flow

    transport (TLS) --get_buffer/buffer_updated--> FrameReader (enclave.proto.wsframe)
                     (asyncio's TLS layer decrypts straight into the reader's buffer)
                 --> on_message(opcode, payload view)     ping -> pong, close -> close
    send(*parts)  --> one bytes: frame header + parts --> transport.write (one TLS write)

Why not aiohttp's WebSocket after the upgrade: per message it copies the payload several times
(fragments joined, unmasked into a new bytearray, the header concatenated), wakes a task, and
writes header and payload as two TLS records; this path moves a relayed stream's every byte.
Here a message costs one copy on the way out (header and parts joined) and none on the way in
(the payload is a view into the receive buffer, valid during on_message only).

Flow control: the socket carries TCP_NOTSENT_LOWAT (NOTSENT_LOWAT): the kernel holds at most
that much not-yet-sent data (beyond what is in flight), so a stream that outruns its path
queues in user space, where the callers see it, not in megabytes of socket buffer; the
transport's write buffer has a high-water mark (HIGH_WATER); above it `paused` is true and
on_writable is called when it drains below LOW_WATER; senders check `paused` and hold back
(bounded, and dropping rather than queueing: see the callers).  Liveness: with a heartbeat, a
link that has heard nothing for one heartbeat sends a ping, and one silent for three is aborted.
Malformed frames: a close with the RFC 6455 code (1002 / 1009), then the connection is closed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import ssl
import time
from collections.abc import Callable
from typing import cast

from enclave.proto.wsframe import (
    CLOSE_NORMAL,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ZERO_MASK,
    FrameReader,
    WsError,
    close_payload,
    frame_header,
)

HIGH_WATER = 256 * 1024  # bytes in the transport's write buffer before `paused`
LOW_WATER = 64 * 1024
NOTSENT_LOWAT = 128 * 1024  # TCP_NOTSENT_LOWAT: unsent bytes the kernel holds per socket
MAX_HANDSHAKE = 16 * 1024  # bytes of the server's HTTP 101 answer
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OnMessage = Callable[[int, "memoryview | bytes"], None]


class WsHandshakeError(Exception):
    """The server did not answer the upgrade with a valid 101."""


def accept_key(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


def set_notsent_lowat(transport: asyncio.BaseTransport, lowat: int = NOTSENT_LOWAT) -> bool:
    """TCP_NOTSENT_LOWAT on the transport's TCP socket (False: no TCP socket, or refused)."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, lowat)
    except OSError:
        return False
    return True


class WsLink(asyncio.BufferedProtocol):
    """Frames of one WebSocket; client=True masks (with the zero key) and reads unmasked frames,
    the server side the other way round."""

    def __init__(self, on_message: OnMessage, *, client: bool, max_message: int,
                 heartbeat: float | None = None,
                 on_writable: Callable[[], None] | None = None) -> None:
        self.reader = FrameReader(masked=not client, max_message=max_message)
        self._mask = ZERO_MASK if client else None
        self._on_message = on_message
        self._heartbeat = heartbeat
        self.on_writable = on_writable
        self.transport: asyncio.Transport | None = None
        self.done = asyncio.Event()  # set when the connection is lost
        self.paused = False  # the write buffer is over HIGH_WATER
        self.paused_ns = 0  # time.monotonic_ns() when it went over (a standing queue's age)
        self.close_code: int | None = None  # the code we closed with or the peer sent
        self.last_rx = 0.0
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._prev: asyncio.BaseProtocol | None = None
        # client only, until the 101 has been read
        self._key: bytes | None = None
        self._hs = bytearray()
        self._hs_room = bytearray()
        self.opened: asyncio.Future[None] | None = None

    # --- setting up --------------------------------------------------------------------------
    def take_over(self, transport: asyncio.Transport) -> None:
        """Become the protocol of `transport`, whose WebSocket handshake is done (the protocol
        before us is told when the connection is lost, so its owner can clean up)."""
        self._prev = transport.get_protocol()
        transport.set_protocol(self)
        self.connection_made(transport)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's or uvloop's (whose TLS transport is no asyncio.Transport subclass)
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        set_notsent_lowat(transport)
        loop = asyncio.get_running_loop()
        self.last_rx = loop.time()
        if self._heartbeat:
            self._timer = loop.call_later(self._heartbeat, self._beat)

    def start_handshake(self, netloc: str, path: str) -> asyncio.Future[None]:
        """Client: send the HTTP upgrade; the future is done when the 101 was read (an
        exception: WsHandshakeError, or ConnectionError if the connection went first)."""
        assert self.transport is not None
        self._key = base64.b64encode(os.urandom(16))
        self._hs_room = bytearray(MAX_HANDSHAKE + 1)
        self.opened = asyncio.get_running_loop().create_future()
        self.transport.write(
            f"GET {path} HTTP/1.1\r\nHost: {netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        return self.opened

    # --- reading -----------------------------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        if self.opened is not None and not self.opened.done():
            return memoryview(self._hs_room)[:MAX_HANDSHAKE + 1 - len(self._hs)]
        return self.reader.buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.last_rx = asyncio.get_running_loop().time()
        if self.opened is not None and not self.opened.done():
            self._handshake_bytes(nbytes)
            return
        self.reader.filled(nbytes)
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            msgs = self.reader.messages()
        except WsError as exc:
            self.close(exc.code, exc.reason)
            return
        for op, payload in msgs:
            if self._closing:
                return
            if op == OP_BINARY or op == OP_TEXT:
                self._on_message(op, payload)
            elif op == OP_PING:
                self._write(frame_header(OP_PONG, len(payload), self._mask) + bytes(payload))
            elif op == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else CLOSE_NORMAL
                self.close(code)  # the answer, then the connection is closed

    def _handshake_bytes(self, nbytes: int) -> None:
        assert self.opened is not None and self.transport is not None
        self._hs += self._hs_room[:nbytes]
        end = self._hs.find(b"\r\n\r\n")
        if end < 0:
            if len(self._hs) > MAX_HANDSHAKE:
                self._fail_handshake("the answer to the upgrade is too long")
            return
        head, rest = bytes(self._hs[:end]), bytes(self._hs[end + 4:])
        self._hs = self._hs_room = bytearray()
        lines = head.decode("latin-1").split("\r\n")
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        status = lines[0].split(" ", 2)
        assert self._key is not None
        if len(status) < 2 or status[1] != "101":
            self._fail_handshake(f"upgrade answered {lines[0][:80]!r}")
        elif (fields.get("upgrade", "").lower() != "websocket"
              or fields.get("sec-websocket-accept", "").encode() != accept_key(self._key)):
            self._fail_handshake("upgrade answered without a valid Sec-WebSocket-Accept")
        elif fields.get("sec-websocket-extensions"):
            self._fail_handshake("an extension was not offered")
        else:
            self.opened.set_result(None)
            if rest:  # frames right behind the 101
                room = self.reader.buffer()
                room[:len(rest)] = rest
                self.reader.filled(len(rest))
                self._dispatch()

    def _fail_handshake(self, why: str) -> None:
        assert self.opened is not None and self.transport is not None
        self.opened.set_exception(WsHandshakeError(why))
        self._closing = True
        self.transport.abort()

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.opened is not None and not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the WebSocket upgrade"))
        self.done.set()
        prev, self._prev = self._prev, None
        if prev is not None:
            prev.connection_lost(exc)

    # --- writing -----------------------------------------------------------------------------
    def pause_writing(self) -> None:
        self.paused = True
        self.paused_ns = time.monotonic_ns()

    def resume_writing(self) -> None:
        self.paused = False
        if self.on_writable is not None:
            self.on_writable()

    def buffered(self) -> int:
        """Bytes in the transport's write buffer (0 when closed)."""
        return 0 if self.transport is None else self.transport.get_write_buffer_size()

    @property
    def closing(self) -> bool:
        return self._closing or self.transport is None or self.transport.is_closing()

    def send(self, *parts: bytes | memoryview) -> bool:
        """One binary message made of `parts` (joined with the header: one copy, one write);
        False when the link is closing.  Goes out even when `paused` (the caller decides)."""
        if self.closing:
            return False
        n = 0
        for p in parts:
            n += len(p)
        self._write(b"".join((frame_header(OP_BINARY, n, self._mask), *parts)))
        return True

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Send a close frame and close the connection (once the write buffer is out)."""
        if self._closing or self.transport is None:
            return
        self.close_code = code
        body = close_payload(code, reason)
        self._write(frame_header(OP_CLOSE, len(body), self._mask) + body)
        self._closing = True
        self.transport.close()

    def abort(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    def _beat(self) -> None:
        assert self._heartbeat
        self._timer = None
        if self.closing:
            return
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self.last_rx
        if quiet > 3 * self._heartbeat:
            self.abort()
            return
        if quiet > self._heartbeat:
            self._write(frame_header(OP_PING, 0, self._mask))
        self._timer = loop.call_later(self._heartbeat, self._beat)


async def open_client(host: str, port: int, *, netloc: str, path: str, ssl_ctx: ssl.SSLContext,
                      link: WsLink, check: Callable[[asyncio.Transport], None],
                      timeout: float) -> WsLink:
    """Connect `link` (a client WsLink) to wss://netloc/path at host:port: TLS, then
    check(transport) (e.g. the platform's key pin: raise to stop before a byte of ours is
    sent), then the upgrade.  Raises what connecting, check or the handshake raise."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        transport, _ = await loop.create_connection(lambda: link, host, port, ssl=ssl_ctx)
        try:
            check(transport)
            await link.start_handshake(netloc, path)
        except BaseException:
            transport.abort()
            raise
    return link
