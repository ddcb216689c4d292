"""The platform's UDP relay of last resort: forwards opaque ciphertext between two agents that
could not reach each other directly.  Wire layouts: enclave.proto.wire (MSG_RELAY_*).

    agent X                         relay                                agent Y
    -------                         -----                                -------
    REGISTER(ch=7, cookie=0, ticket X->Y)  --> ticket MAC/expiry ok? else silence
                         <-- CHALLENGE(ch=7, cookie=C(addr_X, ch))
    REGISTER(ch=7, cookie=C, ticket X->Y)  --> cookie ok: reg[addr_X, 7] = (X -> Y)
                         <-- REGISTERED(ch=7, lifetime)
                                                 (Y does the same with its ticket Y->X, ch=3)
    DATA(ch=7, msg)                        --> reg[addr_X,7] = X->Y, reg(Y->X) live
                                               --> DATA(ch=3, msg) to addr_Y   (same size)

Rules: nothing is ever sent in answer to a packet without a valid ticket; replies are smaller
than the request; the cookie (return routability) stops a forged source address from being
registered; data flows only between two live registrations whose tickets name each other
(the platform mints tickets only when mutual intent holds); registrations expire unless
refreshed; state is bounded; every registration's data is rate limited.

REGISTER rate (what a stranger can make the relay do, and what an agent needs):

    datagram --native punt bucket (PUNT_RATE/s, all sources)--> RelayCore: ticket MAC checked
        bad ticket  -> silence; no state, no bucket spent (a spoofed-source flood of junk costs
                       the thread a look-up and Python at most PUNT_RATE MAC checks a second)
        good ticket -> the bucket of its system (ticket.src: authenticated, not the source
                       address) -> the global reply bucket -> CHALLENGE / REGISTERED

An agent introduced to many peers at once registers a channel per peer from one source, two
REGISTERs each (the challenge round, then with the cookie), then refreshes each every 20 s:
REGISTER_BURST_PER_SYSTEM covers an introduction burst of that many, REGISTER_RATE_PER_SYSTEM
its refreshes. A captured ticket replayed from spoofed sources gets at most that system's
bucket of CHALLENGEs (each smaller than the request) and never a registration.

Forwarding runs in the compiled module (enclave._fastpath.RelayForwarder, thread
enclave-relay): it owns the UDP socket, takes DATA in batches (recvmmsg), looks (source,
channel) up in a table, rewrites the header's channel in place and sends the batch (sendmmsg).
Everything else (REGISTER, header-only DATA, anything malformed) reaches RelayCore through the
forwarder's punt socket, as before.  RelayCore stays the single authority: it installs a
forwarding entry for each direction of a pair only while both registrations are live and name
each other, with the shorter of their lifetimes, and removes it the moment either is dropped
(expiry, re-registration elsewhere, allow_only: a revoked system is cut at once).  DATA with no
entry (a forged source, an unregistered channel) is dropped in the thread and counted; nothing
is ever sent back.  Each entry has its own token bucket (DATA_RATE_PACKETS), the table is
bounded by MAX_REGISTRATIONS (one entry per registration).

    UDP --recvmmsg--> enclave-relay --DATA(ch), entry-->  header ch := dst ch --sendmmsg--> UDP
                          |  DATA, no entry / expired / over rate: dropped, counted
                          +--punt socket (anything else)--> RelayCore.receive --> replies

Tickets are HMAC-SHA256 tagged with a key only the platform holds (``relay.key`` in the
platform directory, encrypted at rest with the platform's key-encryption passphrase like the CA
key: enclave.cert.keystore.SecretStore; a clear 32-byte file from an older version is
encrypted in place at start); the control channel hands each side its ticket with the
introduction.  Only systems the control hub allows (allow_only: active, unrevoked, unexpired)
may register or be relayed to: a revoked system's live registrations are dropped at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import web

from enclave._fastpath import (
    PUNT_DATAGRAM,
    PUNT_HEADER_LEN,
    RELAY_AQM_INTERVAL_NS,
    RELAY_AQM_TARGET_NS,
    RELAY_DROP_COUNTERS,
    RelayForwarder,
)
from enclave.cert.errors import KeyStoreError
from enclave.cert.keystore import SecretStore
from enclave.discovery.candidates import PathAddr, Transport
from enclave.discovery.dualstack import sendable
from enclave.platform.app import LISTEN, PLATFORM
from enclave.platform.relay_ws import RelayWs, serve_ws
from enclave.proto.ratelimit import KeyedRateLimiter, TokenBucket
from enclave.proto.relay_batch import RELAY_WS_PATH
from enclave.proto.wire import (
    MSG_RELAY_CHALLENGE,
    MSG_RELAY_DATA,
    MSG_RELAY_REGISTER,
    MSG_RELAY_REGISTERED,
    RELAY_COOKIE_SIZE,
    RELAY_HEADER_SIZE,
    RELAY_TICKET_LABEL,
    RelayTicket,
    WireError,
    decode_relay_ticket,
    pack_relay_header,
    relay_ticket_signed_part,
    unpack_relay_header,
)

log = logging.getLogger("enclave.platform.relay")

Addr = tuple[str, int]

TICKET_LIFETIME = 3600  # seconds a freshly minted ticket is good for
REGISTRATION_LIFETIME = 60  # a registration not refreshed within this is forgotten
COOKIE_PERIOD = 30  # cookies are valid for the current and the previous period
MAX_REGISTRATIONS = 65536
# REGISTERs with a valid ticket per second per system (the ticket's src), and the burst: an
# introduction to 256 peers at once (2 REGISTERs each); 32/s refreshes 640 channels every 20 s
REGISTER_RATE_PER_SYSTEM = 32.0
REGISTER_BURST_PER_SYSTEM = 512.0
REGISTER_RATE_GLOBAL = 2000.0  # answered REGISTERs per second, every system together
REGISTER_BURST_GLOBAL = 1000.0
PUNT_RATE = 10_000.0  # datagrams per second the forwarder hands to RelayCore (native bucket)
PUNT_BURST = 2_000.0
AQM_TARGET_ENV = "ENCLAVE_PLATFORM_RELAY_AQM_TARGET_US"  # CoDel target at the relay; 0: off
AQM_INTERVAL_ENV = "ENCLAVE_PLATFORM_RELAY_AQM_INTERVAL_US"  # and its interval
# forwarded datagrams per second per registration (500k: ~5.6 Gbit/s of 1,400-byte datagrams, so
# one relayed pair is not held below what the relay machine can move; the kernel's socket
# buffers and the forwarder thread bound the rest); ENCLAVE_PLATFORM_RELAY_DATA_RATE sets it
DATA_RATE_PACKETS = 500_000
DATA_BURST_PACKETS = 50_000.0  # a tenth of a second at that rate
DATA_RATE_ENV = "ENCLAVE_PLATFORM_RELAY_DATA_RATE"
# SO_RCVBUF / SO_SNDBUF of the relay socket: 256 KiB (the kernel doubles it), ~0.5 ms at
# 3 Gbit/s. The queue in it stands while the relay thread is off the CPU, and a TCP stream
# keeps it full: at 1 MiB the mean wait there was 0.8-1.4 ms and a relayed RTT under load
# 4.3-8.8 ms, at 256 KiB 0.23-0.63 ms and 1.6-4.6 ms, same throughput (docs/PERFORMANCE.md;
# 4 MiB before that was worse still). CoDel (RelayForwarder) handles what stands longer.
SOCKET_BUFFER = 1 << 18
SOCKET_BUFFER_ENV = "ENCLAVE_PLATFORM_RELAY_BUFFER"  # bytes, for measuring other links
PUNT_READS = 256  # punted datagrams RelayCore takes per wake-up of the event loop
DEFAULT_PORT = 3479
KEY_FILE = "relay.key"
KEY_SIZE = 32


# ---------------------------------------------------------------------------------- tickets
def mint_ticket(key: bytes, src: str, dst: str, expires: int) -> bytes:
    """A ticket saying "system `src` may relay to system `dst` until `expires` (unix s)"."""
    signed = relay_ticket_signed_part(expires, src, dst)
    return signed + hmac.new(key, RELAY_TICKET_LABEL + signed, hashlib.sha256).digest()


def verify_ticket(key: bytes, data: bytes, now: float) -> RelayTicket | None:
    """The ticket if its MAC is right and it has not expired; None otherwise."""
    try:
        t = decode_relay_ticket(data)
    except WireError:
        return None
    want = hmac.new(key, RELAY_TICKET_LABEL + t.signed_part(), hashlib.sha256).digest()
    if not hmac.compare_digest(want, t.mac) or t.expires <= now or t.src == t.dst:
        return None
    return t


def load_or_create_key(store: SecretStore) -> bytes:
    """The platform's relay ticket key: created (encrypted, 0600) on first use; a clear key
    file left by an older version is encrypted in place."""
    if not store.path.exists():
        key = secrets.token_bytes(KEY_SIZE)
        store.save(key)
        return key
    if store.is_clear(KEY_SIZE):
        key = store.path.read_bytes()
        store.save(key)
        log.warning("relay key %s was stored in clear; it is now encrypted", store.path)
        return key
    key = store.load()
    if len(key) != KEY_SIZE:
        raise KeyStoreError(f"{store.path}: relay key must be {KEY_SIZE} bytes")
    return key


# ---------------------------------------------------------------------------------- core
class ForwardTable(Protocol):
    """Where RelayCore puts its forwarding decisions (enclave._fastpath.RelayForwarder)."""

    def install(self, src: Addr, channel: int, dst: Addr, dst_channel: int,
                lifetime: float) -> None: ...

    def remove(self, src: Addr, channel: int) -> bool: ...


@dataclass
class _Registration:
    src: str
    dst: str
    addr: Addr
    channel: int
    ticket_expires: int
    expires: float
    bucket: TokenBucket


class RelayCore:
    """Sans-I/O relay: ``receive(data, addr, now) -> [(bytes, addr)]`` (now = unix seconds).

    With a ForwardTable (forward_with), every change of the registrations is mirrored into it:
    (addr, channel) of a registration whose partner is live -> the partner's (addr, channel),
    for as long as both live; DATA then normally never reaches receive() (data_seen counts
    what does)."""

    def __init__(
        self,
        ticket_key: bytes,
        *,
        cookie_secret: bytes | None = None,
        max_registrations: int = MAX_REGISTRATIONS,
    ) -> None:
        self._key = ticket_key
        self._cookie_secret = cookie_secret or secrets.token_bytes(32)
        self._max = max_registrations
        self._now = 0.0  # the latest `now` passed in (allow_only has none of its own)
        self._by_addr: dict[tuple[Addr, int], _Registration] = {}
        self._by_pair: dict[tuple[str, str], _Registration] = {}
        self._allowed: frozenset[str] | None = None  # None: every ticket holder
        self._limiter = KeyedRateLimiter(  # keyed by the ticket's system, not the source
            REGISTER_RATE_PER_SYSTEM,
            REGISTER_BURST_PER_SYSTEM,
            global_rate=REGISTER_RATE_GLOBAL,
            global_burst=REGISTER_BURST_GLOBAL,
        )
        self._table: ForwardTable | None = None
        self.forwarded = 0
        self.forwarded_bytes = 0  # payload bytes (without the relay header)
        self.dropped = 0
        self.data_seen = 0  # DATA datagrams handled here (in Python)

    def __len__(self) -> int:
        return len(self._by_addr)

    @property
    def max_registrations(self) -> int:
        return self._max

    def forward_with(self, table: ForwardTable | None, now: float) -> None:
        """Mirror the forwarding decisions into `table` from now on (None: stop)."""
        self._table = table
        self._now = max(self._now, now)
        self._sync(list(self._by_addr), now)

    def _sync(self, keys: Iterable[tuple[Addr, int]], now: float) -> None:
        """Make the table's entries for `keys` what the registrations say (install replaces
        an entry in place, so a refresh never leaves a gap)."""
        if self._table is None:
            return
        for key in keys:
            reg = self._by_addr.get(key)
            other = None if reg is None else self._by_pair.get((reg.dst, reg.src))
            if reg is None or other is None or min(reg.expires, other.expires) <= now:
                self._table.remove(*key)
            else:
                try:
                    self._table.install(reg.addr, reg.channel, other.addr, other.channel,
                                        min(reg.expires, other.expires) - now)
                except OverflowError:  # not by construction (an entry per registration)
                    log.error("relay forwarding table full; %s:%d ch %d not forwarded",
                              reg.addr[0], reg.addr[1], reg.channel)

    def cookie(self, addr: Addr, channel: int, now: float, *, period_offset: int = 0) -> bytes:
        period = int(now // COOKIE_PERIOD) - period_offset
        msg = f"{addr[0]}|{addr[1]}|{channel}|{period}".encode()
        return hmac.new(self._cookie_secret, msg, hashlib.sha256).digest()[:RELAY_COOKIE_SIZE]

    def receive(self, data: bytes, addr: Addr, now: float) -> list[tuple[bytes, Addr]]:
        self._now = max(self._now, now)
        try:
            kind, channel = unpack_relay_header(data)
        except WireError:
            self.dropped += 1
            return []
        if kind == MSG_RELAY_DATA:
            self.data_seen += 1
            return self._forward(data, addr, channel, now)
        if kind == MSG_RELAY_REGISTER:
            return self._register(data, addr, channel, now)
        self.dropped += 1  # CHALLENGE / REGISTERED only travel relay -> agent
        return []

    def allow_only(self, names: set[str] | frozenset[str]) -> None:
        """Only these systems may register or be relayed to from now on; registrations
        naming anyone else (revoked, disabled, expired, removed) are dropped at once."""
        self._allowed = frozenset(names)
        touched: list[tuple[Addr, int]] = []
        for reg in [r for r in self._by_addr.values() if not self._permitted(r.src, r.dst)]:
            touched += self._drop(reg)
        self._sync(touched, self._now)

    def _permitted(self, src: str, dst: str) -> bool:
        return self._allowed is None or (src in self._allowed and dst in self._allowed)

    def expire(self, now: float) -> None:
        self._now = max(self._now, now)
        touched: list[tuple[Addr, int]] = []
        for reg in [r for r in self._by_addr.values() if r.expires <= now]:
            touched += self._drop(reg)
        self._sync(touched, now)

    def _drop(self, reg: _Registration) -> list[tuple[Addr, int]]:
        """Forget `reg`; the table keys this touches (its own and its partner's)."""
        self._by_addr.pop((reg.addr, reg.channel), None)
        if self._by_pair.get((reg.src, reg.dst)) is reg:
            del self._by_pair[(reg.src, reg.dst)]
        other = self._by_pair.get((reg.dst, reg.src))
        return [(reg.addr, reg.channel)] + ([] if other is None else [(other.addr, other.channel)])

    def _register(
        self, data: bytes, addr: Addr, channel: int, now: float
    ) -> list[tuple[bytes, Addr]]:
        off = RELAY_HEADER_SIZE
        cookie, raw_ticket = data[off : off + RELAY_COOKIE_SIZE], data[off + RELAY_COOKIE_SIZE :]
        ticket = verify_ticket(self._key, raw_ticket, now)
        if (ticket is None or len(cookie) != RELAY_COOKIE_SIZE
                or not self._permitted(ticket.src, ticket.dst)):
            self.dropped += 1
            return []  # unauthenticated: silence, and no bucket of anyone's spent
        if not self._limiter.allow(ticket.src, now):
            self.dropped += 1
            return []
        good = any(
            hmac.compare_digest(cookie, self.cookie(addr, channel, now, period_offset=k))
            for k in (0, 1)
        )
        if not good:
            reply = pack_relay_header(MSG_RELAY_CHALLENGE, channel) + self.cookie(
                addr, channel, now
            )
            return [(reply, addr)]
        touched: list[tuple[Addr, int]] = []
        old = self._by_pair.get((ticket.src, ticket.dst))
        if old is not None:
            touched += self._drop(old)  # re-registration (refresh, roaming, new channel)
        clash = self._by_addr.get((addr, channel))
        if clash is not None:
            touched += self._drop(clash)
        if len(self._by_addr) >= self._max:
            self.expire(now)
            if len(self._by_addr) >= self._max:
                self._sync(touched, now)
                self.dropped += 1
                return []
        reg = _Registration(
            ticket.src,
            ticket.dst,
            addr,
            channel,
            ticket.expires,
            min(now + REGISTRATION_LIFETIME, float(ticket.expires)),
            TokenBucket(DATA_RATE_PACKETS, DATA_BURST_PACKETS),
        )
        self._by_addr[(addr, channel)] = reg
        self._by_pair[(ticket.src, ticket.dst)] = reg
        other = self._by_pair.get((ticket.dst, ticket.src))
        touched.append((addr, channel))
        if other is not None:
            touched.append((other.addr, other.channel))
        self._sync(touched, now)
        lifetime = max(1, int(reg.expires - now))
        reply = pack_relay_header(MSG_RELAY_REGISTERED, channel) + lifetime.to_bytes(4, "little")
        return [(reply, addr)]

    def _forward(
        self, data: bytes, addr: Addr, channel: int, now: float
    ) -> list[tuple[bytes, Addr]]:
        reg = self._by_addr.get((addr, channel))
        if reg is None or reg.expires <= now:
            self.dropped += 1
            return []
        other = self._by_pair.get((reg.dst, reg.src))
        if other is None or other.expires <= now or not reg.bucket.allow(now):
            self.dropped += 1
            return []
        self.forwarded += 1
        self.forwarded_bytes += len(data) - RELAY_HEADER_SIZE
        return [
            (
                pack_relay_header(MSG_RELAY_DATA, other.channel) + data[RELAY_HEADER_SIZE:],
                other.addr,
            )
        ]


# ---------------------------------------------------------------------------------- I/O
EXPIRE_INTERVAL = 5.0  # seconds between RelayCore.expire() runs


def _punted(msg: bytes) -> tuple[Addr, bytes] | None:
    """(source, datagram) of one punt message (header: _fp_punt.pxi, kind 1 DATAGRAM)."""
    if len(msg) < PUNT_HEADER_LEN or msg[0] != PUNT_DATAGRAM:
        return None
    port = int.from_bytes(msg[2:4], "big")
    if msg[1] == 4:
        host = socket.inet_ntop(socket.AF_INET, msg[12:16])
    elif msg[1] == 6:
        host = socket.inet_ntop(socket.AF_INET6, msg[12:28])
    else:
        return None
    return (host, port), msg[PUNT_HEADER_LEN:]


class RelayServer:
    """The relay on one UDP socket (bound by the caller, or on host:port): DATA forwarded by a
    RelayForwarder thread, everything else handed to `core` on the event loop."""

    def __init__(self, core: RelayCore, clock: Callable[[], float] = time.time) -> None:
        self.core = core
        self._clock = clock
        self._sock: socket.socket | None = None
        self.forwarder: RelayForwarder | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def start(
        self, host: str = "0.0.0.0", port: int = DEFAULT_PORT, *, sock: socket.socket | None = None
    ) -> tuple[str, int]:
        if sock is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                raise
        sock.setblocking(False)
        # past the sysctl caps when root (SO_RCVBUFFORCE 33 / SO_SNDBUFFORCE 32), else to them
        size = socket_buffer_from_env()
        for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, size)
            except OSError:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, plain, size)
        rate = data_rate_from_env()
        fwd = RelayForwarder(sock.fileno(), max_entries=self.core.max_registrations,
                             rate=rate, burst=max(1.0, rate / 10), punt_rate=PUNT_RATE,
                             punt_burst=PUNT_BURST, **aqm_from_env())
        self._sock, self.forwarder = sock, fwd
        self.core.forward_with(fwd, self._clock())
        loop = asyncio.get_running_loop()
        loop.add_reader(fwd.punt_socket.fileno(), self._on_punt)
        self._timer = loop.call_later(EXPIRE_INTERVAL, self._on_timer)
        fwd.start()
        name = sock.getsockname()
        return str(name[0]), int(name[1])

    def _on_punt(self) -> None:
        fwd, sock = self.forwarder, self._sock
        if fwd is None or sock is None:
            return
        now = self._clock()
        for _ in range(PUNT_READS):
            try:
                msg = fwd.punt_socket.recv(PUNT_HEADER_LEN + 65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            got = _punted(msg)
            if got is None:
                continue
            src, data = got
            v6 = sock.family == socket.AF_INET6  # bound to "::": IPv4 goes out as ::ffff:a.b.c.d
            for out, dst in self.core.receive(data, src, now):
                with contextlib.suppress(OSError):  # a full buffer: the sender retries
                    sock.sendto(out, sendable(dst, v6))

    def _on_timer(self) -> None:
        self.core.expire(self._clock())
        self._timer = asyncio.get_running_loop().call_later(EXPIRE_INTERVAL, self._on_timer)

    # -- counters (enclave.platform.metrics.RelayCounts) ---------------------------------------
    def _native(self) -> dict[str, int]:
        return {} if self.forwarder is None else self.forwarder.counters()

    @property
    def forwarded(self) -> int:
        return self.core.forwarded + self._native().get("forwarded", 0)

    @property
    def forwarded_bytes(self) -> int:
        return self.core.forwarded_bytes + self._native().get("forwarded_bytes", 0)

    @property
    def dropped(self) -> int:
        return sum(self.drops().values())

    @property
    def python_data(self) -> int:
        """DATA datagrams RelayCore saw (header-only DATA; before start: all of them)."""
        return self.core.data_seen

    def drops(self) -> dict[str, int]:
        """Dropped datagrams by reason: the forwarder's (RELAY_DROP_COUNTERS, without the
        "drop_" prefix), "refused" (RelayCore: no ticket, no registration, rate limit) and
        "overflow" (the kernel's: the relay socket's receive buffer was full)."""
        native = self._native()
        out = {k.removeprefix("drop_"): native.get(k, 0) for k in RELAY_DROP_COUNTERS}
        out["refused"] = self.core.dropped
        out["overflow"] = 0 if self._sock is None else socket_drops(self._sock)
        return out

    def queue(self) -> dict[str, int]:
        """The relay socket's receive queue as the forwarder saw it: buffers timed (kernel
        arrival stamp), their mean and longest wait in us, CoDel drops."""
        native = self._native()
        timed = native.get("aqm_timed", 0)
        return {"timed": timed, "wait_mean_us": native.get("aqm_wait_us", 0) // max(1, timed),
                "wait_max_us": native.get("aqm_wait_max_us", 0),
                "aqm_drops": native.get("drop_aqm", 0)}

    def batches(self) -> dict[str, int]:
        """The forwarder's batching: recvmmsg and sendmmsg calls, coalesced runs taken in
        (UDP_GRO) and sent out whole (UDP GSO)."""
        native = self._native()
        return {"recvmmsg": native.get("rounds", 0), "sendmmsg": native.get("sendmmsg_calls", 0),
                "gro_run_in": native.get("gro_runs", 0), "gso_run_out": native.get("gso_sends", 0)}

    def close(self) -> None:
        """Stop the forwarder thread, then close its punt sockets and the UDP socket."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.forwarder is not None:
            log.info("relay: forwarded %d, receive queue %s, drops %s", self.forwarded,
                     self.queue(), {k: v for k, v in self.drops().items() if v})
        fwd, self.forwarder = self.forwarder, None
        if fwd is not None:
            with contextlib.suppress(RuntimeError):  # no running loop: no reader either
                asyncio.get_running_loop().remove_reader(fwd.punt_socket.fileno())
            self.core.forward_with(None, self._clock())
            fwd.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def data_rate_from_env() -> float:
    """ENCLAVE_PLATFORM_RELAY_DATA_RATE = datagrams per second one registration may have
    forwarded (default DATA_RATE_PACKETS, at least 100; the burst is a tenth of it)."""
    raw = os.environ.get(DATA_RATE_ENV, "").strip()
    try:
        return max(100.0, float(raw)) if raw else float(DATA_RATE_PACKETS)
    except ValueError:
        log.error("%s=%r is not a number of datagrams per second", DATA_RATE_ENV, raw)
        return float(DATA_RATE_PACKETS)


SO_MEMINFO = 55  # linux/socket.h: the socket's sk_meminfo, u32 each ...
SK_MEMINFO_DROPS = 8  # ... of which this one counts the datagrams the kernel dropped for it


def socket_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped for `sock` (receive buffer full: the figure ``ss -u -m``
    shows as d..., via SO_MEMINFO); 0 where the kernel does not say."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * (SK_MEMINFO_DROPS + 1))
    except OSError:
        return 0
    if len(raw) < 4 * (SK_MEMINFO_DROPS + 1):
        return 0
    return int.from_bytes(raw[4 * SK_MEMINFO_DROPS : 4 * SK_MEMINFO_DROPS + 4], sys.byteorder)


def socket_buffer_from_env() -> int:
    """ENCLAVE_PLATFORM_RELAY_BUFFER = the relay socket's SO_RCVBUF / SO_SNDBUF in bytes
    (default SOCKET_BUFFER, at least 64 KiB)."""
    raw = os.environ.get(SOCKET_BUFFER_ENV, "").strip()
    try:
        return max(1 << 16, int(raw)) if raw else SOCKET_BUFFER
    except ValueError:
        log.error("%s=%r is not a number of bytes", SOCKET_BUFFER_ENV, raw)
        return SOCKET_BUFFER


def aqm_from_env() -> dict[str, int]:
    """RelayForwarder's aqm_target_ns / aqm_interval_ns from ENCLAVE_PLATFORM_RELAY_AQM_TARGET_US
    (0 turns CoDel off at the relay) and ..._INTERVAL_US, in microseconds; the forwarder's
    RELAY_AQM_TARGET_NS / RELAY_AQM_INTERVAL_NS where unset (for measuring other links)."""
    out = {"aqm_target_ns": int(RELAY_AQM_TARGET_NS),
           "aqm_interval_ns": int(RELAY_AQM_INTERVAL_NS)}
    for key, env in (("aqm_target_ns", AQM_TARGET_ENV), ("aqm_interval_ns", AQM_INTERVAL_ENV)):
        raw = os.environ.get(env, "").strip()
        try:
            if raw:
                out[key] = max(0, int(raw)) * 1000
        except ValueError:
            log.error("%s=%r is not a number of microseconds", env, raw)
    if out["aqm_target_ns"] and out["aqm_interval_ns"] <= out["aqm_target_ns"]:
        log.error("relay CoDel interval must exceed its target; the defaults are used")
        out = {"aqm_target_ns": int(RELAY_AQM_TARGET_NS),
               "aqm_interval_ns": int(RELAY_AQM_INTERVAL_NS)}
    return out


def relay_bind_from_env(default_host: str = "0.0.0.0") -> tuple[str, int] | None:
    """ENCLAVE_PLATFORM_RELAY = "host:port" (default: default_host — the API's listen address
    — and port 3479; ":port" takes default_host too) or "off"."""
    raw = os.environ.get("ENCLAVE_PLATFORM_RELAY", f":{DEFAULT_PORT}").strip()
    if raw.lower() in ("off", "none", ""):
        return None
    host, _, port = raw.rpartition(":")
    try:
        return (host or default_host, int(port))
    except ValueError:
        log.error("ENCLAVE_PLATFORM_RELAY=%r is not host:port; relay disabled", raw)
        return None


# ---------------------------------------------------------------------------------- platform app
@dataclass
class RelayService:
    """What the rest of the platform uses: the relay's advertised address and ticket minting
    (the control hub puts both into each Introduction: `relay`, `relay_ticket`)."""

    server: RelayServer
    key: bytes
    public: PathAddr
    lifetime: int = TICKET_LIFETIME  # the hub re-issues tickets after half of it
    ws: RelayWs | None = None  # the relay over TLS (RELAY_WS_PATH); same tickets
    public_alt: PathAddr | None = None  # its address of the other IP family, if advertised

    def __post_init__(self) -> None:
        if self.ws is None:
            self.ws = RelayWs(lambda raw, now: verify_ticket(self.key, raw, now))

    def public_for(self, ipv6: bool) -> PathAddr:
        """The address to offer a system whose control connection runs over IPv6 (`ipv6`) or
        IPv4: the relay's address of that family when it has one, else `public`. (Both ends of
        a relayed pair reach the one relay socket, each over its own family.)"""
        if self.public_alt is not None and ipv6 != (":" in self.public.host):
            return self.public_alt
        return self.public

    def ticket(self, src: str, dst: str, lifetime: int | None = None) -> bytes:
        return mint_ticket(self.key, src, dst, int(time.time()) + (lifetime or self.lifetime))

    def allow_only(self, names: set[str] | frozenset[str]) -> None:
        """See RelayCore.allow_only (the control hub calls this after every re-evaluation);
        on the relay over TLS, a WebSocket left with no registration is closed (by allow_only)."""
        self.server.core.allow_only(names)
        if self.ws is not None:
            cut = self.ws.allow_only(names)
            if cut:
                log.info("relay over TLS: cut %d connection(s) of systems no longer allowed",
                         len(cut))


def ticket_lifetime_from_env() -> int:
    """ENCLAVE_PLATFORM_RELAY_TICKET_LIFETIME = seconds (default TICKET_LIFETIME, min 10)."""
    raw = os.environ.get("ENCLAVE_PLATFORM_RELAY_TICKET_LIFETIME", "").strip()
    try:
        return max(10, int(raw)) if raw else TICKET_LIFETIME
    except ValueError:
        log.error("ENCLAVE_PLATFORM_RELAY_TICKET_LIFETIME=%r is not a number of seconds", raw)
        return TICKET_LIFETIME


RELAY = web.AppKey("relay", RelayService)


async def _startup(app: web.Application) -> None:
    listen = app.get(LISTEN)
    bind = relay_bind_from_env(listen[0] if listen else "0.0.0.0")
    if bind is None:
        return
    platform = app[PLATFORM]
    try:
        key = load_or_create_key(platform.paths.secret_store(KEY_FILE))
    except (KeyStoreError, OSError) as exc:
        log.error("relay not started: its key cannot be loaded: %s", exc)
        return
    server = RelayServer(RelayCore(key))
    try:
        _host, port = await server.start(*bind)
    except OSError as exc:
        log.warning("relay not started on %s:%d: %s", bind[0], bind[1], exc)
        return
    public_name = os.environ.get("ENCLAVE_PLATFORM_RELAY_PUBLIC") or _public_name(
        bind[0], urlsplit(platform.settings.url).hostname)
    hosts = [h for name in public_name.split(",") if name.strip()
             for h in await _addresses_of(name.strip())]
    if not hosts:
        log.warning("relay not started: its public name %r has no address", public_name)
        server.close()
        return
    alt = next((h for h in hosts if (":" in h) != (":" in hosts[0])), None)
    app[RELAY] = RelayService(server, key, PathAddr(Transport.RELAY, hosts[0], port),
                              ticket_lifetime_from_env(),
                              public_alt=None if alt is None else PathAddr(Transport.RELAY, alt,
                                                                           port))
    log.info("relay listening on udp %s:%d (advertised as %s)", bind[0], port,
             hosts[0] if alt is None else f"{hosts[0]} and {alt}")


def _public_name(bound: str, url_host: str | None) -> str:
    """What agents are told to reach the relay at: the address it is bound to, unless that is
    unspecified (0.0.0.0), then the platform URL's host (each node of a shared platform that
    binds its own address advertises its own relay)."""
    try:
        if not ipaddress.ip_address(bound).is_unspecified:
            return bound
    except ValueError:
        pass
    return url_host or bound


async def _addresses_of(host: str) -> list[str]:
    """IP literals for `host`: an IPv4 or IPv6 literal as it is; a name resolved once, off the
    event loop, to its first IPv4 and its first IPv6 address (those it has). Agents are given
    only addresses, never names, so they never resolve anything the platform sends."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    out: list[str] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, family=family)
        except (OSError, UnicodeError):
            continue
        if infos:
            out.append(str(infos[0][4][0]))
    return out


async def _shutdown(app: web.Application) -> None:
    service = app.get(RELAY)
    if service is not None:
        service.server.close()
        if service.ws is not None:
            service.ws.close_all()  # taken-over WebSockets: aiohttp's shutdown cannot end them


async def _relay_ws(request: web.Request) -> web.StreamResponse:
    """GET /v1/relay: the relay over TLS (enclave.platform.relay_ws); 404 when it is off."""
    service = request.app.get(RELAY)
    if service is None or service.ws is None:
        raise web.HTTPNotFound()
    return await serve_ws(service.ws, request)


def setup(app: web.Application) -> None:
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    app.router.add_get(RELAY_WS_PATH, _relay_ws)
