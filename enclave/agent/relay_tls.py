"""The agent's relay over TLS: relayed peers on one pinned WebSocket to the platform's HTTPS port.

    ConnectionManager                 RelayTlsClient                         platform
    UseRelay(peer) ---------------> add(peer, ticket) --connect wss://<platform>/v1/relay
                                      (TLS key pinned, checked before a byte of ours is sent)
                                    REGISTER(ch, ticket) ------------------------------->
    node.add_candidate(relay-tls)<- on_registered(peer, path) <----------- REGISTERED(ch)
    send(msg, path) -> pending[ch] --(one call_soon per loop turn)--> DATA(ch, batch) -->
    send_frames(batch, path) -> batches[ch] (the fast path's TX, joined) -> DATA(ch, batch) -->
    on_message(msg, path) <-------- frame_runs <------------------------ DATA(ch, batch)
    on_frames(run, path)  <-------- (runs of DATA: to the fast path's inject_frames)

The path of a peer relayed this way is PathAddr(Transport.RELAY_TLS, <platform host>, <channel>):
the channel is this agent's own label for the peer (drawn at random from the same kind of table
as the UDP relay's: enclave.agent.relay_channels).
Messages are the end-to-end encrypted enclave datagrams the UDP relay carries (the platform sees
ciphertext only); every datagram sent within one event-loop turn to one peer goes out as one
WebSocket message (enclave.proto.relay_batch); the compiled data plane's batches (already
framed that way) of one loop turn are joined as they are, within the batch limits.  On
receipt, runs of DATA messages go to `on_frames` still framed (the data plane opens them),
everything else to `on_message`.  Registrations are refreshed every REFRESH_INTERVAL seconds
and sent again after a reconnect (jittered exponential backoff, as the control channel does).
The WebSocket is open only while some peer is relayed over it.  A malformed message from the
platform is dropped whole (silence).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from cryptography import x509

from enclave import _fastpath as fp
from enclave.agent.control import backoff_delay
from enclave.agent.relay_channels import ChannelTable
from enclave.cert.keys import spki_sha256
from enclave.discovery.candidates import PathAddr, Transport
from enclave.proto.relay_batch import (
    MAX_BATCH_BYTES,
    MAX_BATCH_FRAMES,
    MAX_MESSAGE,
    RELAY_WS_PATH,
    pack_batch,
    split_batches,
    unpack_batch,
)
from enclave.proto.wire import (
    MSG_RELAY_DATA,
    MSG_RELAY_REGISTER,
    MSG_RELAY_REGISTERED,
    RELAY_HEADER_SIZE,
    RELAY_REGISTERED_SIZE,
    WireError,
    pack_relay_header,
    unpack_relay_header,
)

log = logging.getLogger("enclave.agent.relay_tls")

REFRESH_INTERVAL = 20.0
HEARTBEAT = 20.0
MAX_PENDING = 4096  # datagrams queued for one peer within one loop turn; more are dropped
MAX_QUEUED_BYTES = 4 << 20  # framed batches queued for one peer within one loop turn

OnMessage = Callable[[bytes, PathAddr], None]
OnFrames = Callable[[bytes, PathAddr], None]  # a run of framed DATA messages
OnRegistered = Callable[[str, PathAddr], None]


class RelayTlsError(Exception):
    pass


@dataclass
class _Channel:
    peer: str
    ticket: bytes
    channel: int
    registered: bool = False
    pending: list[bytes] = field(default_factory=list)
    batches: list[tuple[bytes, int]] = field(default_factory=list)  # (TX batch, frames)
    batch_bytes: int = 0


class RelayTlsClient:
    """Relayed peers over one WebSocket (asyncio; start with add(), stop with close())."""

    def __init__(self, url: str, pin: str, host: str, on_message: OnMessage,
                 on_registered: OnRegistered, on_frames: OnFrames | None = None) -> None:
        """on_frames: where runs of DATA go still framed (the compiled data plane); without
        it every message goes to on_message."""
        parts = urlsplit(url)
        self.ws_url = urlunsplit(("wss", parts.netloc, RELAY_WS_PATH, "", ""))
        self.host = host  # the label in every relay-tls PathAddr
        self.pin = pin.lower()
        self._on_message = on_message
        self._on_registered = on_registered
        self._on_frames = on_frames
        self._channels: ChannelTable[_Channel] = ChannelTable()
        self._by_peer = self._channels.by_peer
        self._by_channel = self._channels.by_channel
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self._flush_scheduled = False
        self.state = "idle"
        self.last_error: str | None = None
        self.connects = 0
        self.tx_messages = self.rx_messages = self.dropped = 0
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._ctx.check_hostname = False
        self._ctx.verify_mode = ssl.CERT_NONE  # trust comes from the pin, checked below
        self._ctx.minimum_version = ssl.TLSVersion.TLSv1_2

    # --- channels ---------------------------------------------------------------------------
    def add(self, peer: str, ticket: bytes) -> None:
        """Relay `peer` over TLS with `ticket` (connects if needed; REGISTER when connected)."""
        ch = self._by_peer.get(peer)
        if ch is None:
            ch = self._channels.new(lambda number: _Channel(peer, ticket, number))
        else:
            ch.ticket = ticket
        self._register(ch)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def set_ticket(self, peer: str, ticket: bytes) -> None:
        ch = self._by_peer.get(peer)
        if ch is not None:
            ch.ticket = ticket
            self._register(ch)

    def remove(self, peer: str) -> None:
        self._channels.remove(peer)

    def path_for(self, peer: str) -> PathAddr | None:
        ch = self._by_peer.get(peer)
        return None if ch is None else PathAddr(Transport.RELAY_TLS, self.host, ch.channel)

    def registered(self, peer: str) -> bool:
        return self._channels.registered(peer)

    # --- sending ------------------------------------------------------------------------------
    def send(self, msg: bytes, path: PathAddr) -> bool:
        """Queue `msg` for the peer on `path`; everything queued in this loop turn goes out as
        one batch (False: no such channel, or not connected)."""
        ch = self._by_channel.get(path.port)
        if ch is None or path.host != self.host or self._ws is None:
            return False
        if len(ch.pending) >= MAX_PENDING:
            self.dropped += 1
            return False
        ch.pending.append(msg)
        self._schedule_flush()
        return True

    def send_frames(self, frames: bytes, path: PathAddr) -> bool:
        """Queue a batch that is already framed (the compiled data plane's TX: u16 length |
        message, at most fp.PUNT_BATCH_MAX bytes and 256 messages): the batches queued in one
        loop turn go out together, as few WebSocket messages as the batch limits allow."""
        ch = self._by_channel.get(path.port)
        ws = self._ws
        if ch is None or path.host != self.host or ws is None or ws.closed:
            return False
        if ch.batch_bytes + len(frames) > MAX_QUEUED_BYTES:
            self.dropped += 1
            return False
        try:
            _end, count, _runs = fp.frame_runs(frames)
        except ValueError:
            count = 0
        if count == 0:
            return False
        ch.batches.append((frames, count))
        ch.batch_bytes += len(frames)
        self._schedule_flush()
        return True

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        ws = self._ws
        for ch in self._by_channel.values():
            if not ch.pending and not ch.batches:
                continue
            frames, ch.pending = ch.pending, []
            batches, ch.batches = ch.batches, []
            ch.batch_bytes = 0
            if ws is None or ws.closed:
                continue
            head = pack_relay_header(MSG_RELAY_DATA, ch.channel)
            for run in split_batches(frames):
                self._write(ws, head + pack_batch(run))
            self._write_batches(ws, head, batches)

    def _write_batches(self, ws: aiohttp.ClientWebSocketResponse, head: bytes,
                       batches: list[tuple[bytes, int]]) -> None:
        """Framed batches, joined into messages within MAX_BATCH_FRAMES / MAX_BATCH_BYTES."""
        cur: list[bytes] = [head]
        size = count = 0
        for b, n in batches:
            if count and (count + n > MAX_BATCH_FRAMES or size + len(b) > MAX_BATCH_BYTES):
                self._write(ws, b"".join(cur))
                cur, size, count = [head], 0, 0
            cur.append(b)
            size += len(b)
            count += n
        if count:
            self._write(ws, b"".join(cur))

    def _register(self, ch: _Channel) -> None:
        if self._ws is not None and not self._ws.closed:
            self._write(self._ws, pack_relay_header(MSG_RELAY_REGISTER, ch.channel) + ch.ticket)

    def _write(self, ws: aiohttp.ClientWebSocketResponse, data: bytes) -> None:
        self.tx_messages += 1
        task = asyncio.get_running_loop().create_task(ws.send_bytes(data))
        task.add_done_callback(_swallow)

    # --- the connection -------------------------------------------------------------------
    async def close(self) -> None:
        self._channels.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        attempt = 0
        timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while self._by_peer:
                try:
                    await self._session(http)
                    attempt = 0
                except (RelayTlsError, aiohttp.ClientError, OSError, TimeoutError,
                        ValueError) as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.info("relay over TLS unavailable: %s", self.last_error)
                finally:
                    self._ws = None
                    self.state = "disconnected"
                    for ch in self._by_peer.values():
                        ch.registered = False
                        ch.pending.clear()
                        ch.batches.clear()
                        ch.batch_bytes = 0
                if not self._by_peer:
                    break
                await asyncio.sleep(backoff_delay(attempt))
                attempt += 1
        self.state = "idle"

    async def _session(self, http: aiohttp.ClientSession) -> None:
        self.state = "connecting"
        # compress=0: no permessage-deflate (aiohttp offers it by default): the batches are
        # ciphertext, which does not compress, and zlib over every byte was the path's ceiling
        async with http.ws_connect(self.ws_url, ssl=self._ctx, heartbeat=HEARTBEAT,
                                   max_msg_size=MAX_MESSAGE, autoping=True, compress=0) as ws:
            self._check_pin(ws)
            self._ws = ws
            self.state = "connected"
            self.connects += 1
            log.info("relay over TLS connected to %s", self.ws_url)
            for ch in list(self._by_peer.values()):
                self._register(ch)
            refresh = asyncio.get_running_loop().create_task(self._refresh(ws))
            try:
                while self._by_peer:
                    msg = await ws.receive()
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        self._receive(msg.data)
                    elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                      aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
            finally:
                refresh.cancel()
        log.info("relay over TLS closed (code %s)", ws.close_code)

    async def _refresh(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while not ws.closed:
            await asyncio.sleep(REFRESH_INTERVAL)
            for ch in list(self._by_peer.values()):
                self._register(ch)

    def _check_pin(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        ssl_obj = ws.get_extra_info("ssl_object")
        der = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
        if not der:
            raise RelayTlsError("cannot read the platform's TLS certificate")
        got = spki_sha256(x509.load_der_x509_certificate(der))
        if not hmac.compare_digest(got, self.pin):
            raise RelayTlsError(f"platform TLS key {got} does not match the pin {self.pin}")

    def _receive(self, data: bytes) -> None:
        """One message from the relay: REGISTERED or a DATA batch (anything else: dropped)."""
        self.rx_messages += 1
        try:
            kind, channel = unpack_relay_header(data)
        except WireError:
            self.dropped += 1
            return
        ch = self._by_channel.get(channel)
        if ch is None:
            self.dropped += 1
            return
        path = PathAddr(Transport.RELAY_TLS, self.host, ch.channel)
        if kind == MSG_RELAY_DATA:
            try:
                end, count, runs = fp.frame_runs(data, RELAY_HEADER_SIZE)
            except ValueError:
                end, count, runs = 0, 0, []
            if (end != len(data) or not 0 < count <= MAX_BATCH_FRAMES
                    or len(data) - RELAY_HEADER_SIZE > MAX_BATCH_BYTES):
                self.dropped += 1  # malformed: the whole message, never a partial batch
                return
            view = memoryview(data)
            for start, stop, is_data in runs:
                if is_data and self._on_frames is not None:
                    self._on_frames(bytes(view[start:stop]), path)
                elif is_data:
                    for msg in unpack_batch(view[start:stop]) or []:
                        self._on_message(msg, path)
                else:
                    self._on_message(bytes(view[start:stop]), path)
        elif kind == MSG_RELAY_REGISTERED and len(data) == RELAY_REGISTERED_SIZE:
            first = not ch.registered
            ch.registered = True
            if first:
                self._on_registered(ch.peer, path)
        else:
            self.dropped += 1


def _swallow(task: asyncio.Task[None]) -> None:
    """A send on a WebSocket that closed meanwhile: the reader notices and reconnects."""
    if not task.cancelled():
        task.exception()
