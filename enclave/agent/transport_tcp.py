"""TCP data paths: a listener and simultaneous-open connectors on one local port, with
length-prefixed framing of enclave datagrams (for networks that drop UDP).

    local port P (SO_REUSEADDR + SO_REUSEPORT on every socket)
      listener  [::]:P  <-- SYN from a peer whose NAT already lets us in (accept)
      connector [::]:P  --> SYN to the peer's TCP candidate, repeated by the kernel; when both
                            sides' SYNs cross, each NAT sees its own SYN go out first and lets
                            the other's in: TCP simultaneous open (RFC 793 §3.4)
    (dual-stack sockets, IPV6_V6ONLY off, by default: IPv4 peers are a.b.c.d in every PathAddr
    and ::ffff:a.b.c.d only at the socket, enclave.discovery.dualstack)

Frame on the stream (one enclave datagram each; handshake, control and data alike; the
framing of enclave.proto.relay_batch, whose FRAME_PREFIX / MAX_FRAME are the ones used here):

    +--------------------------+--------------------------------------+
    | length (u16, big endian) | datagram (length bytes, 1..65535)    |
    +--------------------------+--------------------------------------+

With the compiled data plane (`on_frames` given) DATA is never split into Python objects one
by one: a TX batch of the fast path is already framed and is written to the stream as it is
(send_frames), and what arrives is cut by fp.frame_runs into runs of DATA frames, handed on
still framed (on_frames -> DataPlane.inject_frames), and single other frames (on_frame).

Every socket (listener, connectors, hence accepted streams too) carries the gateway SOCKET_MARK
(best effort: it needs CAP_NET_ADMIN), like the UDP data socket: the gateway ip rule sends only
unmarked packets to the gateway route table, so a tunnel to an address inside a gateway's routes
never loops into the tunnel itself.

A stream is addressed as PathAddr(TCP, remote ip, remote port) — for the Node it is one more
path.  Several streams to the same remote address are fine (one connected out, one accepted):
we read from all and send on the first.

Strangers get nothing from the data port, and cannot hold its slots:
  - the port guard (enclave.agent.guard, when given) drops TCP to the port from any address
    not among the introduced peers' candidates, in the kernel: no SYN-ACK, no RST;
  - an accepted stream must become authenticated (the owner calls authenticate(addr) once a
    session runs over it) within AUTH_TIMEOUT seconds, or it is closed;
  - unauthenticated accepted streams are bounded per source IP (MAX_STREAMS_PER_IP) and in
    total (MAX_STREAMS);
  - a stream whose bytes do not complete a frame for IDLE_TIMEOUT seconds is closed (partial
    frames do not count as traffic); one that breaks the framing at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol, cast

from enclave import _fastpath as fp
from enclave.agent.udp_socket import dual_stack_socket
from enclave.discovery.candidates import PathAddr, Transport
from enclave.discovery.dualstack import sendable, unmapped
from enclave.policy.gateway import SOCKET_MARK
from enclave.proto.relay_batch import FRAME_PREFIX, unpack_batch
from enclave.proto.relay_batch import MAX_FRAME as MAX_FRAME

log = logging.getLogger("enclave.agent.tcp")

FRAME_HEADER = FRAME_PREFIX
CONNECT_TIMEOUT = 8.0  # the kernel retransmits the SYN at 1, 3, 7 s
RETRY_AFTER = 1.0  # a failed connect may be retried this long after it failed
IDLE_TIMEOUT = 90.0
AUTH_TIMEOUT = 5.0  # an accepted stream without an authenticated session is closed after this
MAX_STREAMS = 256
MAX_STREAMS_PER_IP = 4  # unauthenticated accepted streams from one source IP
MAX_PENDING = 8  # datagrams queued per address while connecting
WRITE_BUFFER_LIMIT = 1 << 20  # beyond this, datagrams are dropped (UDP-like)

SocketFactory = Callable[[], socket.socket]
OnFrame = Callable[[bytes, PathAddr], None]
OnFrames = Callable[[bytes, PathAddr], None]  # a run of framed DATA messages


class PortGuardLike(Protocol):
    """The kernel-side guard of the data port (enclave.agent.guard.PortGuard fits)."""

    def install(self, port: int) -> bool: ...

    def allow(self, peer: str, hosts: Iterable[str]) -> None: ...

    def forget(self, peer: str) -> None: ...

    def remove(self) -> None: ...


def default_socket_factory() -> socket.socket:
    """A TCP socket for both families (AF_INET6, IPV6_V6ONLY off) where the kernel has IPv6:
    the data port listens and connects over IPv4 and IPv6 (IPv4 as ::ffff:a.b.c.d on it)."""
    return dual_stack_socket(socket.SOCK_STREAM)


def mark_best_effort(sock: socket.socket, mark: int = SOCKET_MARK) -> bool:
    """Put the gateway bypass mark on a data socket; False when not permitted (no root)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    except OSError as exc:
        log.debug("cannot mark the TCP data socket (SO_MARK): %s", exc)
        return False
    return True


def frame(data: bytes) -> bytes:
    if not 0 < len(data) <= MAX_FRAME:
        raise ValueError("a TCP frame carries 1..65535 bytes")
    return len(data).to_bytes(FRAME_HEADER, "big") + data


class FrameDecoder:
    """Splits a byte stream into frames (pure)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= FRAME_HEADER:
            n = int.from_bytes(self._buf[:FRAME_HEADER], "big")
            if n == 0:
                raise ValueError("empty frame")
            if len(self._buf) < FRAME_HEADER + n:
                break
            out.append(bytes(self._buf[FRAME_HEADER : FRAME_HEADER + n]))
            del self._buf[: FRAME_HEADER + n]
        return out

    def feed_runs(self, data: bytes) -> list[tuple[bool, bytes]]:
        """Like feed, but DATA frames in a row come out as one run, still framed (True, run:
        at most fp.PUNT_BATCH_MAX bytes); every other frame alone (False, datagram)."""
        self._buf += data
        end, _count, runs = fp.frame_runs(self._buf)  # ValueError: a zero length
        view = memoryview(self._buf)
        try:
            out = [(is_data, bytes(view[a:b])) for a, b, is_data in runs]
        finally:
            view.release()
        del self._buf[:end]
        return out


class _Stream(asyncio.Protocol):
    def __init__(self, owner: TcpTransport, accepted: bool) -> None:
        self.owner = owner
        self.accepted = accepted
        self.addr: PathAddr | None = None
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder()
        self.last_rx = 0.0
        self.authenticated = not accepted  # we dialled a candidate ourselves
        self._auth_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass: no isinstance check
        tr = cast(asyncio.Transport, transport)
        peer = tr.get_extra_info("peername")
        self.transport = tr
        loop = asyncio.get_running_loop()
        self.last_rx = loop.time()
        host = None if peer is None else unmapped(str(peer[0]))  # IPv4 as a.b.c.d
        if peer is None or host is None or not self.owner._admit(self, host):
            tr.abort()
            return
        self.addr = PathAddr(Transport.TCP, host, int(peer[1]))
        with contextlib.suppress(OSError):
            tr.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self.authenticated:
            self._auth_timer = loop.call_later(AUTH_TIMEOUT, self._auth_deadline)
        self.owner._attach(self)

    def _auth_deadline(self) -> None:
        self._auth_timer = None
        if not self.authenticated and self.transport is not None:
            self.owner.auth_timeouts += 1
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.addr is None or self.transport is None:
            return
        on_frames = self.owner._on_frames
        try:
            runs = (self.decoder.feed_runs(data) if on_frames is not None
                    else [(False, f) for f in self.decoder.feed(data)])
        except ValueError:
            self.transport.abort()  # a stream that breaks the framing is not a peer of ours
            return
        if runs:  # bytes that do not complete a frame do not keep a stream alive
            self.last_rx = asyncio.get_running_loop().time()
        for is_data, f in runs:
            self.owner.rx_frames += 1
            try:
                if is_data and on_frames is not None:
                    on_frames(f, self.addr)
                else:
                    self.owner._on_frame(f, self.addr)
            except Exception:
                log.exception("error while handling a TCP frame from %s", self.addr)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        self.owner._detach(self)
        self.transport = None

    def write(self, data: bytes) -> bool:
        t = self.transport
        if t is None or t.is_closing() or t.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            return False
        t.write(frame(data))
        return True

    def write_frames(self, frames: bytes) -> bool:
        t = self.transport
        if t is None or t.is_closing() or t.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            return False
        t.write(frames)
        return True


class TcpTransport:
    def __init__(
        self,
        port: int,
        on_frame: OnFrame,
        *,
        socket_factory: SocketFactory = default_socket_factory,
        bind_host: str = "0.0.0.0",
        guard: PortGuardLike | None = None,
        on_frames: OnFrames | None = None,
    ) -> None:
        """`guard` (the agent's nftables guard) admits TCP to the port only from introduced
        peers (allow_peer); without it the port answers every SYN. `on_frames`: where runs of
        received DATA go still framed (the compiled data plane); without it every datagram
        goes to `on_frame`."""
        self.port = port
        self._guard = guard
        self._on_frame = on_frame
        self._on_frames = on_frames
        self._factory = socket_factory
        self._bind_host = bind_host
        self._server: asyncio.AbstractServer | None = None
        self._streams: dict[PathAddr, list[_Stream]] = {}
        self._connecting: dict[PathAddr, asyncio.Task[None]] = {}
        self._failed_at: dict[PathAddr, float] = {}
        self._pending: dict[PathAddr, deque[bytes]] = {}
        self._all: set[_Stream] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self.rx_frames = 0
        self.tx_frames = 0
        self.connects = 0
        self.connect_failures = 0
        self.auth_timeouts = 0  # accepted streams closed without an authenticated session
        self.refused = 0  # accepted streams over the per-IP or total bound

    def _socket(self) -> socket.socket:
        sock = self._factory()
        try:
            mark_best_effort(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            host = self._bind_host
            if sock.family == socket.AF_INET6 and host == "0.0.0.0":
                host = "::"  # the wildcard of a dual-stack socket
            sock.bind(sendable((host, self.port), sock.family == socket.AF_INET6))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = self._socket()
        if self.port == 0:
            self.port = int(sock.getsockname()[1])
        if self._guard is not None:
            self._guard.install(self.port)  # before listen(): no stranger's SYN gets an answer
        sock.listen(64)
        self._server = await loop.create_server(lambda: _Stream(self, True), sock=sock)
        self._reaper = loop.create_task(self._reap())

    async def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        for task in list(self._connecting.values()):
            task.cancel()
        for s in list(self._all):
            if s.transport is not None:
                s.transport.abort()
        if self._reaper is not None:
            self._reaper.cancel()
        tasks = [*self._connecting.values(), *([self._reaper] if self._reaper else [])]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._connecting.clear()
        if self._guard is not None:
            self._guard.remove()

    # --- who may connect ---------------------------------------------------------------------
    def allow_peer(self, peer: str, hosts: Iterable[str]) -> None:
        """An introduced peer's candidate hosts may open TCP to the port (the guard's set)."""
        if self._guard is not None:
            self._guard.allow(peer, hosts)

    def forget_peer(self, peer: str) -> None:
        if self._guard is not None:
            self._guard.forget(peer)

    def authenticate(self, addr: PathAddr) -> None:
        """A session runs over the streams at `addr`: they are no longer on a deadline."""
        for s in self._streams.get(addr, ()):
            s.authenticated = True

    # --- streams ----------------------------------------------------------------------------
    def _admit(self, s: _Stream, host: str) -> bool:
        if self._closed:
            return False
        if not s.accepted:
            return True
        strangers = sum(1 for o in self._all if o.addr is not None and o.addr.host == host
                        and not o.authenticated)
        if len(self._all) >= MAX_STREAMS or strangers >= MAX_STREAMS_PER_IP:
            self.refused += 1
            return False
        return True

    def _attach(self, s: _Stream) -> None:
        assert s.addr is not None
        self._all.add(s)
        self._streams.setdefault(s.addr, []).append(s)
        pending = self._pending.pop(s.addr, None)
        if pending:
            for data in pending:
                if s.write(data):
                    self.tx_frames += 1

    def _detach(self, s: _Stream) -> None:
        self._all.discard(s)
        if s.addr is None:
            return
        lst = self._streams.get(s.addr)
        if lst is not None and s in lst:
            lst.remove(s)
            if not lst:
                del self._streams[s.addr]

    def connected(self, addr: PathAddr) -> bool:
        return bool(self._streams.get(addr))

    def stream_count(self) -> int:
        return len(self._all)

    async def _reap(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(IDLE_TIMEOUT / 6)
            now = loop.time()
            for s in list(self._all):
                if now - s.last_rx > IDLE_TIMEOUT and s.transport is not None:
                    s.transport.abort()

    # --- sending ----------------------------------------------------------------------------
    def send(self, data: bytes, addr: PathAddr) -> bool:
        """Send one datagram to `addr`; connects first (simultaneous open) if needed."""
        if self._closed or not 0 < len(data) <= MAX_FRAME:
            return False
        for s in self._streams.get(addr, ()):
            if s.write(data):
                self.tx_frames += 1
                return True
        q = self._pending.setdefault(addr, deque(maxlen=MAX_PENDING))
        q.append(data)
        if addr not in self._connecting:
            loop = asyncio.get_running_loop()
            failed = self._failed_at.get(addr)
            if failed is None or loop.time() - failed >= RETRY_AFTER:
                self._connecting[addr] = loop.create_task(self._connect(addr))
        return False

    def send_frames(self, frames: bytes, addr: PathAddr) -> bool:
        """Send datagrams already framed (the compiled data plane's TX batch) to `addr` with
        one write; with no stream up yet they queue one by one as send() does."""
        if self._closed:
            return False
        for s in self._streams.get(addr, ()):
            if s.write_frames(frames):
                self.tx_frames += 1
                return True
        sent = False
        for data in unpack_batch(frames) or []:
            sent = self.send(data, addr) or sent
        return sent

    async def _connect(self, addr: PathAddr) -> None:
        loop = asyncio.get_running_loop()
        self.connects += 1
        sock: socket.socket | None = None
        try:
            sock = self._socket()
            dest = sendable((addr.host, addr.port), sock.family == socket.AF_INET6)
            await asyncio.wait_for(loop.sock_connect(sock, dest), CONNECT_TIMEOUT)
            if self._closed:
                return
            s = sock
            sock = None
            await loop.create_connection(lambda: _Stream(self, False), sock=s)
            self._failed_at.pop(addr, None)
        except (OSError, TimeoutError):
            # refused, timed out, or the 4-tuple is already an accepted stream (EADDRINUSE)
            self.connect_failures += 1
            now = loop.time()
            # entries older than RETRY_AFTER no longer hold anything back: pruned (bounded)
            for old in [a for a, t in self._failed_at.items() if now - t >= RETRY_AFTER]:
                del self._failed_at[old]
            self._failed_at[addr] = now
            if not self.connected(addr):
                self._pending.pop(addr, None)
        finally:
            if sock is not None:
                sock.close()
            self._connecting.pop(addr, None)
