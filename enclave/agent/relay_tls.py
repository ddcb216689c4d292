"""The agent's relay over TLS: relayed peers on one pinned WebSocket to the platform's HTTPS port.

    ConnectionManager                 RelayTlsClient                         platform
    UseRelay(peer) ---------------> add(peer, ticket) --connect wss://<platform>/v1/relay
                                      (TLS key pinned, checked before a byte of ours is sent)
                                    REGISTER(ch, ticket) ------------------------------->
    node.add_candidate(relay-tls)<- on_registered(peer, path) <----------- REGISTERED(ch)
    send(msg, path) -> pending[ch] --(one call_soon per loop turn)--> DATA(ch, batch) -->
    send_frames(batch, path) -> batches[ch] (the fast path's TX, joined) -> DATA(ch, batch) -->
    on_message(msg, path) <-------- frame_runs <------------------------ DATA(ch, batch)
    on_frames(run, path)  <-------- (runs of DATA: to the fast path's inject_frames, as views
                                     into the receive buffer: no copy)

The path of a peer relayed this way is PathAddr(Transport.RELAY_TLS, <platform host>, <channel>):
the channel is this agent's own label for the peer (drawn at random from the same kind of table
as the UDP relay's: enclave.agent.relay_channels).
Messages are the end-to-end encrypted enclave datagrams the UDP relay carries (the platform sees
ciphertext only); every datagram sent within one event-loop turn to one peer goes out as one
WebSocket message (enclave.proto.relay_batch); the compiled data plane's batches (already
framed that way) of one loop turn are joined as they are, within the batch limits, into one
write each (enclave.wslink.WsLink: the WebSocket after its upgrade, no task or await per
message).  While the connection's write buffer is over its high-water mark the queued batches
wait (bounded: MAX_PENDING datagrams, MAX_QUEUED_BYTES of batches per peer; more are dropped,
as a full link drops) and go out when it drains; a batch that waited longer than CoDel's target
loses bulk datagrams as CoDel says (enclave.agent.relay_tls_aqm: an inner TCP stream backs off
instead of filling every buffer on the way; small datagrams always go).  `drops` counts what
was dropped, by reason.  On receipt, runs of DATA messages go to
`on_frames` still framed (the data plane opens them), everything else to `on_message`.
Registrations are refreshed every REFRESH_INTERVAL seconds and sent again after a reconnect
(jittered exponential backoff, as the control channel does).  The WebSocket is open only while
some peer is relayed over it.  A malformed message from the platform is dropped whole
(silence); a malformed WebSocket frame closes the connection (and it reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509

from enclave import _fastpath as fp
from enclave.agent.control import backoff_delay
from enclave.agent.relay_channels import ChannelTable
from enclave.agent.relay_tls_aqm import SendAqm
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
from enclave.proto.wsframe import OP_BINARY
from enclave.wslink import WsHandshakeError, WsLink, open_client

log = logging.getLogger("enclave.agent.relay_tls")

REFRESH_INTERVAL = 20.0
HEARTBEAT = 20.0
MAX_PENDING = 4096  # datagrams queued for one peer within one loop turn; more are dropped
MAX_QUEUED_BYTES = 4 << 20  # framed batches queued for one peer (a loop turn, or while paused)
CONNECT_TIMEOUT = 5.0  # TCP + TLS + upgrade
# why a datagram (pending, codel) or a batch (queue_full) on its way out was dropped
DROP_REASONS = ("pending_full", "queue_full", "codel")

OnMessage = Callable[[bytes, PathAddr], None]
OnFrames = Callable[["bytes | memoryview", PathAddr], None]  # a run of framed DATA messages
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
    batches: list[tuple[bytes, int, int]] = field(default_factory=list)  # (batch, frames, ns)
    batch_bytes: int = 0
    aqm: SendAqm = field(default_factory=SendAqm)


class RelayTlsClient:
    """Relayed peers over one WebSocket (asyncio; start with add(), stop with close())."""

    def __init__(self, url: str, pin: str, host: str, on_message: OnMessage,
                 on_registered: OnRegistered, on_frames: OnFrames | None = None) -> None:
        """on_frames: where runs of DATA go still framed (the compiled data plane); without
        it every message goes to on_message."""
        parts = urlsplit(url)
        self.ws_url = urlunsplit(("wss", parts.netloc, RELAY_WS_PATH, "", ""))
        self._netloc = parts.netloc
        self._connect_to = (parts.hostname or "", parts.port or 443)
        self.host = host  # the label in every relay-tls PathAddr
        self.pin = pin.lower()
        self._on_message = on_message
        self._on_registered = on_registered
        self._on_frames = on_frames
        self._channels: ChannelTable[_Channel] = ChannelTable()
        self._by_peer = self._channels.by_peer
        self._by_channel = self._channels.by_channel
        self._link: WsLink | None = None
        self._task: asyncio.Task[None] | None = None
        self._flush_scheduled = False
        self.state = "idle"
        self.last_error: str | None = None
        self.connects = 0
        self.tx_messages = self.rx_messages = self.dropped = 0
        self.drops: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)  # dropped sends by reason
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

    def aqm_counters(self, peer: str) -> dict[str, int] | None:
        """CoDel at this peer's send queue: bulk datagrams dropped, small ones let by while
        its queue stood (None: not relayed over TLS)."""
        ch = self._by_peer.get(peer)
        if ch is None:
            return None
        return {"codel_drops": ch.aqm.drops_codel, "kept_small": ch.aqm.kept_small}

    # --- sending ------------------------------------------------------------------------------
    def send(self, msg: bytes, path: PathAddr) -> bool:
        """Queue `msg` for the peer on `path`; everything queued in this loop turn goes out as
        one batch (False: no such channel, or not connected)."""
        ch = self._by_channel.get(path.port)
        if ch is None or path.host != self.host or self._link is None or self._link.closing:
            return False
        if len(ch.pending) >= MAX_PENDING:
            self._drop("pending_full")
            return False
        ch.pending.append(msg)
        self._schedule_flush()
        return True

    def send_frames(self, frames: bytes, path: PathAddr) -> bool:
        """Queue a batch that is already framed (the compiled data plane's TX: u16 length |
        message, at most fp.PUNT_BATCH_MAX bytes and 256 messages): the batches queued in one
        loop turn go out together, as few WebSocket messages as the batch limits allow."""
        ch = self._by_channel.get(path.port)
        link = self._link
        if ch is None or path.host != self.host or link is None or link.closing:
            return False
        if ch.batch_bytes + len(frames) > MAX_QUEUED_BYTES:
            self._drop("queue_full")
            return False
        try:
            _end, count, _runs = fp.frame_runs(frames)
        except ValueError:
            count = 0
        if count == 0:
            return False
        ch.batches.append((frames, count, time.monotonic_ns()))
        ch.batch_bytes += len(frames)
        self._schedule_flush()
        return True

    def _drop(self, reason: str, n: int = 1) -> None:
        self.dropped += n
        self.drops[reason] += n

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Everything queued goes out, unless the connection's write buffer is full: then it
        waits for on_writable (the queues are bounded by send / send_frames)."""
        self._flush_scheduled = False
        link = self._link
        if link is None or link.closing:
            for ch in self._by_channel.values():
                ch.pending, ch.batches, ch.batch_bytes = [], [], 0
            return
        if link.paused:
            return
        for ch in self._by_channel.values():
            if not ch.pending and not ch.batches:
                continue
            frames, ch.pending = ch.pending, []
            batches, ch.batches = ch.batches, []
            ch.batch_bytes = 0
            head = pack_relay_header(MSG_RELAY_DATA, ch.channel)
            for run in split_batches(frames):
                self._write(link, head, pack_batch(run))
            self._write_batches(link, head, ch.aqm, batches)

    def _write_batches(self, link: WsLink, head: bytes, aqm: SendAqm,
                       batches: list[tuple[bytes, int, int]]) -> None:
        """Framed batches, through CoDel (their time in the queue), joined into messages
        within MAX_BATCH_FRAMES / MAX_BATCH_BYTES."""
        cur: list[bytes] = []
        size = count = 0
        now = time.monotonic_ns()
        for b0, n0, t in batches:
            before = aqm.drops_codel
            b, n = aqm.admit(b0, n0, now - t, now)
            if aqm.drops_codel != before:
                self.drops["codel"] += aqm.drops_codel - before
                self.dropped += aqm.drops_codel - before
            if not n:
                continue
            if count and (count + n > MAX_BATCH_FRAMES or size + len(b) > MAX_BATCH_BYTES):
                self._write(link, head, *cur)
                cur, size, count = [], 0, 0
            cur.append(b)
            size += len(b)
            count += n
        if count:
            self._write(link, head, *cur)

    def _register(self, ch: _Channel) -> None:
        if self._link is not None and not self._link.closing:
            self._write(self._link, pack_relay_header(MSG_RELAY_REGISTER, ch.channel), ch.ticket)

    def _write(self, link: WsLink, *parts: bytes) -> None:
        """One WebSocket message (the parts joined behind its header: one copy, one write)."""
        if link.send(*parts):
            self.tx_messages += 1

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
        while self._by_peer:
            try:
                await self._session()
                attempt = 0
            except (RelayTlsError, WsHandshakeError, OSError, TimeoutError, ValueError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.info("relay over TLS unavailable: %s", self.last_error)
            finally:
                self._link = None
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

    async def _session(self) -> None:
        self.state = "connecting"
        link = WsLink(self._on_ws_message, client=True, max_message=MAX_MESSAGE,
                      heartbeat=HEARTBEAT, on_writable=self._schedule_flush)
        host, port = self._connect_to
        try:
            await open_client(host, port, netloc=self._netloc, path=RELAY_WS_PATH,
                              ssl_ctx=self._ctx, link=link, check=self._check_pin,
                              timeout=CONNECT_TIMEOUT)
            self._link = link
            self.state = "connected"
            self.connects += 1
            log.info("relay over TLS connected to %s", self.ws_url)
            for ch in list(self._by_peer.values()):
                self._register(ch)
            refresh = asyncio.get_running_loop().create_task(self._refresh(link))
            try:
                await link.done.wait()
            finally:
                refresh.cancel()
        finally:
            link.abort()
        log.info("relay over TLS closed (code %s)", link.close_code)

    async def _refresh(self, link: WsLink) -> None:
        while not link.closing:
            await asyncio.sleep(REFRESH_INTERVAL)
            for ch in list(self._by_peer.values()):
                self._register(ch)

    def _check_pin(self, transport: asyncio.Transport) -> None:
        ssl_obj = transport.get_extra_info("ssl_object")
        der = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
        if not der:
            raise RelayTlsError("cannot read the platform's TLS certificate")
        got = spki_sha256(x509.load_der_x509_certificate(der))
        if not hmac.compare_digest(got, self.pin):
            raise RelayTlsError(f"platform TLS key {got} does not match the pin {self.pin}")

    def _on_ws_message(self, op: int, payload: memoryview | bytes) -> None:
        if op == OP_BINARY:
            self._receive(payload)
        else:
            self.dropped += 1  # text: not ours

    def _receive(self, data: bytes | memoryview) -> None:
        """One message from the relay: REGISTERED or a DATA batch (anything else: dropped).
        `data` may be a view into the receive buffer: nothing keeps it past this call."""
        self.rx_messages += 1
        try:
            kind, channel = unpack_relay_header(bytes(data[:RELAY_HEADER_SIZE]))
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
                    self._on_frames(view[start:stop], path)
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
