"""The platform's front door: bounded connections on its TCP listeners (HTTPS API, TCP reflector).

    stranger --TCP--> kernel backlog -- QueueingSite (accept_queue.py) accepts only while the
                          |             caps in total have room (the TCP reflector: closes)
                      GuardedSocket.accept()  -- over the per-address cap on the API listener:
                          |                          held for a place of its own address
                          |                          (address_queue.py); any other cap, or no
                          |                          room to hold: closed at once, one bounded
                          |                          log line
                          | admitted (ConnectionLimits counts it until its socket closes)
                          v
                      TLS handshake (at most IDLE_TIMEOUT) -> HTTP keep-alive (IDLE_TIMEOUT idle)
                          | a control WebSocket that authenticates: ConnectionLimits.authenticated
                          v
                      no longer counted against its source address; never closed for age
                          (unauthenticated ones are shut down UNAUTH_LIFETIMES idle timeouts
                          after accept)

Caps (ConnectionLimits, no I/O): connections in total (below the process's file limit, which
serve raises to its hard limit), unauthenticated connections in total, and unauthenticated
connections per source address (an IPv6 source counts per /64). An unauthenticated connection
is closed after UNAUTH_LIFETIMES idle timeouts (60 s by default) whatever it does (slow headers,
a WebSocket that never says hello). On the API listener a full node does not accept at all (the
connection waits in the backlog: accept_queue.py), and a connection over the per-address cap
waits, accepted but untouched, for a place of its own address (address_queue.py: many agents
behind one NAT that fail over at once). A connection that cannot wait, and every cap on the TCP
reflector, is refused by closing it: no TLS has been spent on it, so there is no HTTP status to
give; refusals after it (bad JSON, too deep, too large, bad token) are HTTP statuses from the
routes.

Settings (environment of `enclave platform serve`):
    ENCLAVE_PLATFORM_IDLE_TIMEOUT     seconds for a TLS handshake and for an idle keep-alive
                                      connection (default 15)
    ENCLAVE_PLATFORM_MAX_UNAUTH       unauthenticated connections in total (default 1024)
    ENCLAVE_PLATFORM_MAX_PER_ADDRESS  unauthenticated connections per source address (default 32)
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import resource
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from enclave.logsafe import RejectionLog

log = logging.getLogger("enclave.platform.frontdoor")

IDLE_TIMEOUT_ENV = "ENCLAVE_PLATFORM_IDLE_TIMEOUT"
MAX_UNAUTH_ENV = "ENCLAVE_PLATFORM_MAX_UNAUTH"
MAX_PER_ADDRESS_ENV = "ENCLAVE_PLATFORM_MAX_PER_ADDRESS"
IDLE_TIMEOUT = 15.0
MAX_UNAUTH = 1024
MAX_PER_ADDRESS = 32
PER_ADDRESS = "unauthenticated connections from one address"  # the per-address cap's reason
UNAUTH_LIFETIMES = 4  # idle timeouts an unauthenticated connection may stay open at all
FD_RESERVE = 256  # file descriptors kept for the database, relay, reflector and logs
BACKLOG = 4096  # the kernel caps it at net.core.somaxconn (4096 by default)


def _env_number(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return max(minimum, float(raw)) if raw else default
    except ValueError:
        log.error("%s=%r is not a number; using %s", name, raw, default)
        return default


def raise_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return int(soft)


def source_key(host: str) -> str:
    """What the per-address cap counts: the IP, or an IPv6 source's /64."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class ConnectionLimits:
    """Counts of open connections by socket fd; admits a new one only within the caps."""
    max_total: int
    max_unauth: int = MAX_UNAUTH
    max_per_address: int = MAX_PER_ADDRESS
    unauth: dict[int, str] = field(default_factory=dict)  # fd -> source key
    auth: set[int] = field(default_factory=set)
    held: int = 0  # accepted connections waiting for a place of their address (not counted yet)
    held_from: Counter[str] = field(default_factory=Counter)  # source key -> held (FIFO per key)
    per_address: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # reason -> how many
    # called whenever a counted connection leaves the unauthenticated caps, or a held one
    # leaves the total (accept_queue.py waits for room instead of accepting connections only
    # to close them; address_queue.py gives a freed place to a held connection)
    on_room: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def from_env(cls, max_total: int) -> ConnectionLimits:
        return cls(max_total,
                   int(_env_number(MAX_UNAUTH_ENV, MAX_UNAUTH, 1)),
                   int(_env_number(MAX_PER_ADDRESS_ENV, MAX_PER_ADDRESS, 1)))

    @property
    def total(self) -> int:
        return len(self.unauth) + len(self.auth) + self.held

    def has_room(self) -> bool:
        """A new connection would pass the caps in total (the per-address one aside)."""
        return self.total < self.max_total and len(self.unauth) < self.max_unauth

    def has_room_for(self, key: str) -> bool:
        """A held connection from source ``key`` would pass every cap."""
        return (self.total - self.held < self.max_total and len(self.unauth) < self.max_unauth
                and self.per_address[key] < self.max_per_address)

    def admit(self, fd: int, host: str, *, count_refusal: bool = True,
              held: bool = False) -> str | None:
        """Count connection ``fd`` from ``host``; None, or why it is refused (then not counted
        as open; counted in ``refused`` unless ``count_refusal`` is False). A new connection
        (not ``held``) of an address with held ones is over its cap: it waits behind them."""
        key = source_key(host)
        if self.total >= self.max_total:
            reason = "connections"
        elif len(self.unauth) >= self.max_unauth:
            reason = "unauthenticated connections"
        elif self.per_address[key] >= self.max_per_address or (
                not held and self.held_from[key] > 0):
            reason = PER_ADDRESS
        else:
            self.unauth[fd] = key
            self.per_address[key] += 1
            return None
        if count_refusal:
            self.refused[reason] += 1
        return reason

    def room_freed(self) -> None:
        """A place in the total freed outside the counted connections: a held one left without a
        place (timed out, or its client gave up). Whoever waits for room is told."""
        self._room()

    def authenticated(self, fd: int) -> bool:
        """Connection ``fd`` proved who it is: it leaves the unauthenticated caps."""
        key = self.unauth.pop(fd, None)
        if key is None:
            return False
        self._uncount(key)
        self.auth.add(fd)
        self._room()
        return True

    def is_authenticated(self, fd: int) -> bool:
        return fd in self.auth

    def release(self, fd: int) -> None:
        key = self.unauth.pop(fd, None)
        if key is not None:
            self._uncount(key)
        elif fd not in self.auth:
            return
        self.auth.discard(fd)
        self._room()

    def _room(self) -> None:
        for wake in self.on_room:
            wake()

    def _uncount(self, key: str) -> None:
        self.per_address[key] -= 1
        if self.per_address[key] <= 0:
            del self.per_address[key]


class _CountedSocket(socket.socket):
    """An accepted connection that gives its place back when it is closed."""

    _on_close: Callable[[int], None] | None = None

    def close(self) -> None:
        fd, release = self.fileno(), self._on_close
        self._on_close = None
        if release is not None and fd >= 0:
            release(fd)
        super().close()


class GuardedSocket(socket.socket):
    """A listening socket whose accept() passes on only connections within ``limits``
    (asyncio's selector event loop calls accept() on it; uvloop would accept in C, around it,
    so the platform runs on asyncio's loop); the others are closed at once, or, over the
    per-address cap, given to ``hold`` when it is set and takes them (address_queue.py)."""

    limits: ConnectionLimits
    rejections: RejectionLog
    what: str
    lifetime: float | None
    hold: Callable[[socket.socket, str], bool] | None = None  # (conn, host): taken?

    def accept(self) -> tuple[socket.socket, Any]:
        while True:
            fd, addr = self._accept()  # type: ignore[attr-defined]
            conn = _CountedSocket(self.family, self.type, self.proto, fileno=fd)
            host = str(addr[0]) if isinstance(addr, tuple) else ""
            refused = self.limits.admit(fd, host, count_refusal=self.hold is None)
            if refused is None:
                self.counted(conn)
                return conn, addr
            if self.hold is not None:
                if refused == PER_ADDRESS and self.hold(conn, host):
                    continue  # waits for a place of its address: not refused
                self.limits.refused[refused] += 1
            self.refuse(conn, host, refused)

    def counted(self, conn: socket.socket) -> None:
        """``conn`` was admitted (ConnectionLimits.admit): its place is given back when it
        closes, and it is shut down if still unauthenticated after ``lifetime``."""
        fd = conn.fileno()
        if isinstance(conn, _CountedSocket):
            conn._on_close = self.limits.release
        if self.lifetime is not None:
            asyncio.get_running_loop().call_later(self.lifetime, self._expire, conn, fd)
        if socket.getdefaulttimeout() is None and self.gettimeout():
            conn.setblocking(True)

    def refuse(self, conn: socket.socket, host: str, reason: str) -> None:
        """Close ``conn`` (not counted) with one bounded log line."""
        conn.close()
        self.rejections.note(source_key(host), "%s: refused a connection from %s (too many "
                             "%s)", self.what, host, reason)

    def _expire(self, conn: socket.socket, fd: int) -> None:
        """An unauthenticated connection past its lifetime: shut down (its transport closes)."""
        if conn.fileno() == fd and fd in self.limits.unauth:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                return
            self.rejections.note(self.limits.unauth.get(fd, ""), "%s: closed an "
                                 "unauthenticated connection after %.0f s", self.what,
                                 self.lifetime)


def guarded_listener(host: str, port: int, limits: ConnectionLimits, what: str, *,
                     lifetime: float | None) -> GuardedSocket:
    """A bound, listening GuardedSocket for ``host``:``port`` (IPv4 or IPv6 literal);
    ``lifetime``: seconds after which a still unauthenticated connection is shut down."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = GuardedSocket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    sock.limits = limits
    sock.rejections = RejectionLog(log)
    sock.what = what
    sock.lifetime = lifetime
    return sock


def transport_fd(transport: asyncio.BaseTransport | None) -> int:
    """The socket fd under a (TLS) transport, -1 if none."""
    sock = None if transport is None else transport.get_extra_info("socket")
    return -1 if sock is None else int(sock.fileno())


def idle_timeout() -> float:
    """ENCLAVE_PLATFORM_IDLE_TIMEOUT (seconds, default IDLE_TIMEOUT, at least 0.5)."""
    return _env_number(IDLE_TIMEOUT_ENV, IDLE_TIMEOUT, 0.5)


FRONT_DOOR = web.AppKey("front_door", ConnectionLimits)  # the API listener's limits (serve)
