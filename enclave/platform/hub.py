"""The control hub: who is online, what they reported, and who is introduced to whom.

    agents (WebSocket sessions) --report candidates--> Hub --introduce / withdraw--> agents
    intents / policies / systems (store) -------------> Hub.reevaluate()

reevaluate() is the single place that decides. It runs on one task (the ticker), so two passes
never overlap, and each pass reads the store once and decides from that read. A pass is one of:

  scoped   a change that names its systems: a session comes, goes or reports (its name), an
           intent is stated or removed (its two ends), another node's notification (the names
           it carries). Only those systems are decided again: the store is read for them, the
           intents from and to them, and their peers (Store.snapshot_of), and only the pairs
           they are in are introduced or withdrawn. With any tag or gateway policy in the store
           a scoped pass becomes a full one (a policy's offers depend on every system's tags).
  full     everything (Store.snapshot), as the reference the scoped pass must agree with: when
           the store's generation moves (an admin change or renewal, from this process or the
           admin CLI: Store.generation, read every TICK), when a change names no systems, and
           every FULL_TICK for what time changes (expiry, stale presence, ephemeral systems),
           or less often on a large platform: the next periodic one waits FULL_DUTY times as
           long as the last one took.

So a burst of intents or connections costs work in proportion to the systems it names, not to
the size of the platform (the mistake of rebuilding the world on every change).

Last-seen times are noted in memory (Store.note_seen: on authentication and on disconnect) and
written every SEEN_FLUSH seconds and before ephemeral systems are reaped, so a control
connection writes nothing to the store.

Ephemeral systems (enrolled with an ephemeral key) are reaped by reevaluate(): one offline for
longer than ENCLAVE_PLATFORM_EPHEMERAL_GRACE seconds (default 600) is removed like `systems
remove` (store.operations._forget: certificates revoked, its intents, the intents naming it and the
gateway policies using it as gateway deleted, name retired; one transaction), and the same pass
withdraws it from its peers and pushes the new CRL. "Offline since" is the system's
last_seen (stamped on connect and on disconnect), but never earlier than this hub's start, so a
platform restart gives every system a full grace to reconnect.

Cloaking: a session learns about another system only through "introduce", which is sent only
for a mutual pair (enclave.policy.mutual) whose both sides are online.

Not in the data path: a pair withdrawn because one side went offline gets reason "offline",
which agents treat as a hint (a working session stays up; see enclave.discovery.introduction).
Such a pair is remembered (dormant): if it then ends for a real reason while a side is still
offline (intent gone, revoked, disabled, expired, removed), the online side gets a withdrawal
with that reason, so the session the hint kept does not outlive it.

Candidate reports take effect at most once per REPORT_INTERVAL per system (a newer report waits
and replaces an older waiting one), so a system cannot make the hub re-introduce its pairs at
will. Loopback candidates are accepted only from a session that comes from loopback to a
platform served on loopback, and are passed only to peers whose sessions are such too (all on
the platform's host).

The relay (if running) is told after every re-evaluation which systems may use it
(RelayService.allow_only): a revoked, disabled, expired or removed system's tickets stop
working at the next re-evaluation (at most FULL_TICK seconds, at once after an admin change).

Several nodes on one (PostgreSQL) store: each hub owns the sessions connected to its node and
publishes them in the presence table (enclave.platform.presence), and wakes the other nodes
with a NOTIFY (enclave.platform.fanout) when a session comes, goes or reports, or when an
intent or admin change lands here. Its online set is its own sessions plus the other nodes'
fresh presence rows; it decides the pairs that have at least one side on this node and sends
each message only to its own side (the other node sends the other side's, deciding from the
same store). A pair split over two nodes is offered the relay of the node of its first name
(sorted), so both sides meet at one relay; tickets are valid on every node's relay (one key).
Every hub (SQLite too) keeps its node's row in the nodes table (enclave.platform.nodes): written
at start, refreshed every HEARTBEAT with its session count, deleted at a clean stop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from enclave.discovery.candidates import Candidate, NatBehaviour, candidate_allowed
from enclave.discovery.channel import PUNCH_DELAY
from enclave.discovery.introduction import Introduction, Withdrawal
from enclave.logsafe import RejectionLog, shown
from enclave.platform.app import Platform
from enclave.platform.errors import StoreError
from enclave.platform.fanout import Event, Listener, notify
from enclave.platform.gateways import GatewaySync
from enclave.platform.nodes import Node, beat, remove, start_node
from enclave.platform.pairs import Pair, PairSet
from enclave.platform.presence import (
    HEARTBEAT,
    Presence,
    PresenceReader,
    heartbeat,
    publish,
    withdraw_node,
)
from enclave.platform.store import Snapshot, System
from enclave.platform.urls import decode_urls
from enclave.policy.intent import IntentStatement, encode_signed
from enclave.policy.mutual import IntentRow, SystemView, mutual_pairs, policy_offers

if TYPE_CHECKING:
    from enclave.platform.relay import RelayService

log = logging.getLogger("enclave.platform.hub")
TICK = 0.25
FULL_TICK = 5.0  # seconds between two periodic full passes (at least)
FULL_DUTY = 20.0  # ... and at least this many times as long as the last full pass took
TICKET_REFRESH_FRACTION = 0.5  # relay tickets are re-issued after this part of their lifetime
TICKET_CHECK = 5.0  # seconds between two looks for relay tickets due (at most)
SEND_QUEUE = 256
REPORT_INTERVAL = 1.0  # seconds between two candidate reports of one system taking effect
OFFER_RETRY = 10.0  # a policy offer not counter-signed by then is sent again
EPHEMERAL_GRACE = 600  # seconds an ephemeral system may stay offline before it is removed
EPHEMERAL_GRACE_ENV = "ENCLAVE_PLATFORM_EPHEMERAL_GRACE"
SEEN_FLUSH = 5.0  # seconds between two writes of the noted last-seen times
CRL_REUSE = 60.0  # seconds a welcome's CRL message is reused (Hub.welcome_crl)


def new_node_id() -> str:
    """This process's id among the nodes of a shared platform: host name and a random part."""
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "-.")[:40]
    return f"{host or 'node'}-{secrets.token_hex(4)}"


def ephemeral_grace_from_env() -> int:
    """ENCLAVE_PLATFORM_EPHEMERAL_GRACE = seconds (default EPHEMERAL_GRACE, min 1)."""
    raw = os.environ.get(EPHEMERAL_GRACE_ENV, "").strip()
    try:
        return max(1, int(raw)) if raw else EPHEMERAL_GRACE
    except ValueError:
        log.error("%s=%r is not a number of seconds; using %d", EPHEMERAL_GRACE_ENV, raw,
                  EPHEMERAL_GRACE)
        return EPHEMERAL_GRACE


@dataclass(eq=False)
class Session:
    name: str
    serial: int
    candidates: tuple[Candidate, ...] = ()
    nat: NatBehaviour = NatBehaviour.UNKNOWN
    mappings: dict[str, Any] = field(default_factory=dict)
    queue: asyncio.Queue[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.Queue(SEND_QUEUE)
    )
    sent_intents: tuple[str, ...] | None = None
    offered: dict[tuple[str, str], float] = field(default_factory=dict)  # pair -> when (mono)
    closed: bool = False
    local: bool = False  # loopback platform reached from loopback: the system is on its host
    ipv6: bool = False  # its control connection runs over IPv6 (offered the relay's IPv6 address)
    reported_at: float | None = None  # monotonic time the last report took effect
    waiting: tuple[tuple[Candidate, ...], NatBehaviour, dict[str, Any]] | None = None
    report_timer: asyncio.TimerHandle | None = None
    public_key: bytes = b""  # the system's key, as authenticated (the reflector's lookup)

    def send(self, msg: dict[str, Any] | None) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:  # a stuck agent: drop the session, it will reconnect
            log.warning("control session %s is not reading; closing it", self.name)
            self.close()

    def close(self) -> None:
        if self.report_timer is not None:
            self.report_timer.cancel()
            self.report_timer = None
        if not self.closed:
            self.closed = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)


def usable(system: System, now: int) -> bool:
    """May the system be introduced: active, with a certificate that has not expired."""
    return system.state == "active" and (system.cert_not_after or 0) > now


def _reason(system: System | None, now: int) -> str:
    if system is None:
        return "revoked"
    if system.state in ("disabled", "revoked"):
        return system.state
    if (system.cert_not_after or 0) <= now:
        return "expired"
    return "offline"


class Hub:
    def __init__(self, platform: Platform,
                 relay: Callable[[], RelayService | None] | None = None,
                 listen: tuple[str, int] | None = None) -> None:
        self.platform = platform
        self.relay = relay  # the platform relay, if running: offered in every introduction
        self.sessions: dict[str, Session] = {}
        self.introduced = PairSet()
        self._dormant = PairSet()  # withdrawn as "offline": may still be up
        self._tickets_at: dict[frozenset[str], float] = {}  # pair -> when its tickets were minted
        self._tickets_checked = 0.0  # monotonic time of the last look for tickets due
        self._view_of: dict[str, tuple[System, SystemView]] = {}  # the last full pass's views
        self.gateways = GatewaySync()
        self._crl_number = -1
        self._welcome_crl: tuple[float, dict[str, Any]] | None = None
        self._generation = -1
        self._last_full = 0.0
        self._full_every = FULL_TICK
        self._full_due = True  # a change that names no systems: the next pass is a full one
        self._touched: set[str] = set()  # systems a change named since the last pass
        self._flushed_at = 0.0
        self._wake = asyncio.Event()
        self._reintroduce: set[Pair] = set()  # pairs whose candidates changed
        self._task: asyncio.Task[None] | None = None
        self.active_keys: dict[str, bytes] = {}  # active systems' keys, as of the last pass
        self._usable: set[str] = set()  # systems the relay serves, as of the last pass
        self.ephemeral_grace = ephemeral_grace_from_env()
        self.rejections = RejectionLog(log)  # bad input from agents, logged within a budget
        self._started_at = int(platform.clock().timestamp())
        # several nodes on one store (PostgreSQL): presence rows and LISTEN/NOTIFY fan-out
        self.node = new_node_id()
        self.shared = platform.store.db.dialect == "postgresql"
        self.remote: dict[str, Presence] = {}  # other nodes' online systems, as of the last pass
        self.urls: tuple[str, ...] = ()  # the platform's URLs, as of the last read of the store
        self._present: set[str] = set()  # our sessions' names whose presence row needs writing
        self._tell: set[str] = set()  # systems a local change named, for the other nodes
        self._tell_all = False  # a local change that names no systems
        self.presence = PresenceReader(platform.store, self.node)
        self._beat_at = 0.0
        self.listener: Listener | None = None
        self.listen = listen  # the API's (host, port), for the nodes table
        self.node_row: Node | None = None  # this process's row there (nodes.py), once started
        self._node_beat_at = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._crl_number = await self.platform.store.crl_number()
        self.node_row = await start_node(
            self.platform.store, self.node, self.listen,
            self.platform.settings.urls or (self.platform.settings.url,), self._started_at)
        self._node_beat_at = time.monotonic()
        if self.shared and self.platform.paths.database is not None:
            self.listener = Listener(self.platform.paths.database, self.node, self._heard)
            self.listener.start()
            log.info("control hub: node %s of a shared platform", self.node)
        self._task = asyncio.get_running_loop().create_task(self._ticker())

    def _heard(self, event: Event | None) -> None:
        """Another node's notification: a scoped pass for the systems it names, a full one
        when it names none (or the LISTEN connection came back: something may be missed)."""
        if event is None or not event.names:
            self._full_due = True
        else:
            self._touched.update(event.names)
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for s in list(self.sessions.values()):
            s.close()
        if self.listener is not None:
            await self.listener.stop()
        try:
            await self.platform.store.flush_seen()
            await remove(self.platform.store, self.node)
            if self.shared:
                await withdraw_node(self.platform.store, self.node)
                await notify(self.platform.store, Event("presence", self.node))
        except Exception:
            log.exception("control hub: last-seen times, node row or presence not written")

    async def _ticker(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK)
            self._wake.clear()
            try:
                mono = time.monotonic()
                if mono - self._flushed_at >= SEEN_FLUSH:
                    self._flushed_at = mono
                    await self.platform.store.flush_seen()
                if self.shared:
                    await self._share(mono)
                if self.node_row is not None and mono - self._node_beat_at >= HEARTBEAT:
                    self._node_beat_at = mono
                    await beat(self.platform.store, self.node_row,
                               int(self.platform.clock().timestamp()), len(self.sessions))
                generation = await self.platform.store.generation()
                if generation != self._generation or not self.urls:
                    await self._read_urls()
                if (self._full_due or generation != self._generation
                        or mono - self._last_full >= self._full_every):
                    self._generation = generation
                    await self.step(full=True)
                elif self._touched:
                    await self.step(full=False)
            except StoreError as exc:  # the database is busy or gone: the next tick retries
                self.rejections.note("store", "control hub: %s", shown(str(exc), 300))
            except Exception:  # keep the hub alive; the next tick retries
                log.exception("control hub re-evaluation failed")

    async def _read_urls(self) -> None:
        """The platform's URLs from the store; when `platform urls add|remove` changed them,
        every connected agent is told ({"type": "urls", "urls": [...]})."""
        first = self.platform.settings.url
        stored = await self.platform.store.get_meta("urls")
        urls = tuple(decode_urls(stored, first)) if stored is not None else (
            tuple(self.platform.settings.urls) or (first,))
        if self.urls and urls != self.urls:
            log.info("control: platform URLs now %s", ", ".join(urls))
            for session in self.sessions.values():
                session.send({"type": "urls", "urls": list(urls)})
        self.urls = urls

    async def step(self, *, full: bool) -> None:
        """One pass on the ticker: full, or scoped to the systems touched since the last one;
        what it took is put back when it fails, so the next tick tries again."""
        taken, self._touched = self._touched, set()
        full_due, self._full_due = self._full_due, False
        started = time.monotonic()
        try:
            full = await self.reevaluate(None if full else taken)
        except BaseException:
            self._touched |= taken
            self._full_due = self._full_due or full_due
            raise
        if full:
            done = time.monotonic()
            self._last_full = done
            self._full_every = max(FULL_TICK, FULL_DUTY * (done - started))

    def has_work(self) -> bool:
        """A change is waiting for a pass."""
        return self._full_due or bool(self._touched)

    def changed(self, names: Iterable[str] | None = None) -> None:
        """Something changed here: re-evaluate soon (coalesced; on the ticker's task) the
        systems ``names`` (None: everything), and tell the other nodes of a shared platform."""
        if names is None:
            self._full_due = self._tell_all = True
        else:
            self._touched.update(names)
            self._tell.update(names)
        self._wake.set()

    async def _share(self, mono: float) -> None:
        """Write our sessions' presence (changed rows now, all every HEARTBEAT) and tell the
        other nodes what changed here."""
        now = int(self.platform.clock().timestamp())
        store = self.platform.store
        changed, self._present = self._present, set()
        tell, self._tell = self._tell, set()
        tell_all, self._tell_all = self._tell_all, False
        try:
            if changed:
                relay = self.relay() if self.relay is not None else None
                rows = [Presence(n, self.node, s.candidates, s.nat, s.local,
                                 None if relay is None else relay.public)
                        for n in sorted(changed) if (s := self.sessions.get(n)) is not None]
                gone = sorted(n for n in changed if n not in self.sessions)
                await publish(store, rows, gone, self.node, now)
            if mono - self._beat_at >= HEARTBEAT:
                self._beat_at = mono
                await heartbeat(store, self.node, now)
            if tell_all:
                await notify(store, Event("change", self.node))
            elif changed or tell:
                await notify(store, Event("presence" if changed else "change", self.node,
                                          tuple(sorted(changed | tell))))
        except BaseException:
            self._present |= changed  # written at the next tick
            self._tell |= tell
            self._tell_all = self._tell_all or tell_all
            raise

    # -- sessions ----------------------------------------------------------------------------

    def join(self, session: Session) -> None:
        old = self.sessions.get(session.name)
        if old is not None:
            log.info("control: %s reconnected; closing its old session", session.name)
            old.close()
        self.sessions[session.name] = session
        self._present.add(session.name)
        if session.public_key:
            self.active_keys[session.name] = session.public_key
        # pairs still introduced (its old session was replaced, or it came from another node
        # that went away): the new session gets their introductions again
        self._reintroduce.update(self.introduced.of(session.name))
        log.info("control: %s online", session.name)
        self.changed((session.name,))

    def leave(self, session: Session) -> None:
        session.close()
        if self.sessions.get(session.name) is session:
            del self.sessions[session.name]
            self._present.add(session.name)
            log.info("control: %s offline", session.name)
            # last_seen is "offline since" for the ephemeral reaper (written in the next batch)
            self.platform.store.note_seen(session.name, int(self.platform.clock().timestamp()))
            self.changed((session.name,))

    def report(self, session: Session, candidates: tuple[Candidate, ...], nat: NatBehaviour,
               mappings: dict[str, Any]) -> None:
        """A candidate report: applied now, or (within REPORT_INTERVAL of the last one) when
        the interval ends, the newest waiting report replacing older ones."""
        session.waiting = (candidates, nat, mappings)
        if session.report_timer is not None or session.closed:
            return
        mono = time.monotonic()
        wait = 0.0 if session.reported_at is None else session.reported_at + REPORT_INTERVAL - mono
        if wait > 0:
            session.report_timer = asyncio.get_running_loop().call_later(
                wait, self._report_due, session)
        else:
            self._apply_report(session)

    def _report_due(self, session: Session) -> None:
        session.report_timer = None
        if not session.closed:
            try:
                self._apply_report(session)
            except Exception:
                log.exception("control hub: applying a report of %s failed", session.name)

    def _apply_report(self, session: Session) -> None:
        if session.waiting is None:
            return
        (candidates, nat, mappings), session.waiting = session.waiting, None
        session.reported_at = time.monotonic()
        if (candidates, nat) == (session.candidates, session.nat):
            session.mappings = mappings
            return
        session.candidates, session.nat, session.mappings = candidates, nat, mappings
        self._reintroduce.update(self.introduced.of(session.name))
        self._present.add(session.name)
        self.changed((session.name,))

    # -- the decision ------------------------------------------------------------------------

    async def reevaluate(self, touched: set[str] | None = None) -> bool:
        """One pass: scoped to the systems ``touched`` (see the module's docstring), or full
        (None, or when a scoped pass finds a policy in the store); True if it was full."""
        if touched is not None and await self._evaluate_some(set(touched)):
            return False
        await self._evaluate_all()
        return True

    async def _evaluate_all(self) -> None:
        store = self.platform.store
        now = int(self.platform.clock().timestamp())
        await self._reap_ephemeral(now)
        if self.shared:
            remote = await self.presence.others(now)
            for name, p in remote.items():  # another node's system reported new candidates
                self._remote_changed(name, p)
            self.remote = {n: p for n, p in remote.items() if n not in self.sessions}
        snap = await store.snapshot(now, frozenset(self.sessions) | frozenset(self.remote))
        if snap.crl_number != self._crl_number:
            crl: dict[str, Any] | None = await self.crl_message()
        else:
            crl = None
        deleted = await self._drop_uncovered(snap)
        # from here on nothing awaits: the sessions do not change under the decision
        systems = snap.systems
        self.active_keys = {n: s.public_key for n, s in systems.items() if s.state == "active"}
        views = self._views(systems, now)
        self._close_unusable(list(self.sessions), snap)
        self._push_crl(crl, snap)
        self._offer_policies(views, snap)
        intents = [IntentRow(r.from_name, r.to_name, r.expires_at, r.policy)
                   for r in snap.intents if (r.from_name, r.to_name) not in deleted]
        self._send_intents(list(self.sessions), intents, now)
        local = {n for n in self.sessions if n in snap.certificates}
        online = local | {n for n in self.remote if n in snap.certificates}
        mutual = mutual_pairs(intents, views, now)
        wanted = {p for p in mutual if p <= online and p & local}
        self._decide(snap, set(self.introduced), set(self._dormant), mutual, wanted, online)
        again, self._reintroduce = self._reintroduce & self.introduced.pairs, set()
        for pair in sorted(again, key=sorted):  # new candidates: introduced again
            a, b = sorted(pair)
            self._introduce(a, b, snap)
        self._refresh_tickets()
        self._usable = {n for n, s in systems.items() if usable(s, now)}
        relay = self.relay() if self.relay is not None else None
        if relay is not None:
            relay.allow_only(frozenset(self._usable))
        self.gateways.sync(snap, systems, dict(self.sessions), self.introduced.pairs, now,
                           lambda name, msg: self.sessions[name].send(msg),
                           lambda a, b: self._introduce(a, b, snap))

    async def _evaluate_some(self, touched: set[str]) -> bool:
        """The scoped pass: decide again only the pairs ``touched`` systems are in, from a
        read of those systems, their intents and their peers; False (nothing done) when the
        store holds a policy, whose offers only a full pass decides."""
        store = self.platform.store
        now = int(self.platform.clock().timestamp())
        if self.shared:
            fresh = await self.presence.some(now, touched)
            for name in sorted(touched):
                p = fresh.get(name)
                if p is not None:
                    self._remote_changed(name, p)
                if p is None or name in self.sessions:
                    self.remote.pop(name, None)
                else:
                    self.remote[name] = p
        partners: set[str] = set()
        for name in touched:
            for pair in self.introduced.of(name) | self._dormant.of(name):
                partners |= pair
        snap = await store.snapshot_of(now, touched, partners)
        if snap.policies:
            return False
        crl = await self.crl_message() if snap.crl_number != self._crl_number else None
        # from here on nothing awaits: the sessions do not change under the decision
        systems = snap.systems
        read = set(touched) | partners | {n for r in snap.intents
                                          for n in (r.from_name, r.to_name)}
        allowed = set(self._usable)
        for name in read:
            system = systems.get(name)
            if system is not None and system.state == "active":
                self.active_keys[name] = system.public_key
            else:
                self.active_keys.pop(name, None)
            if system is not None and usable(system, now):
                self._usable.add(name)
            else:
                self._usable.discard(name)
        views = [SystemView(s.name, s.tags, usable(s, now)) for s in systems.values()]
        self._close_unusable([n for n in sorted(touched) if n in self.sessions], snap)
        self._push_crl(crl, snap)
        intents = [IntentRow(r.from_name, r.to_name, r.expires_at, r.policy)
                   for r in snap.intents]
        self._send_intents([n for n in sorted(touched) if n in self.sessions], intents, now)
        local = {n for n in read if n in self.sessions and n in snap.certificates}
        online = local | {n for n in read if n in self.remote and n in snap.certificates}
        mutual = {p for p in mutual_pairs(intents, views, now) if p & touched}
        wanted = {p for p in mutual if p <= online and p & local}
        current: set[Pair] = set()
        dormant: set[Pair] = set()
        for name in touched:
            current |= self.introduced.of(name)
            dormant |= self._dormant.of(name)
        self._decide(snap, current, dormant, mutual, wanted, online)
        again = {p for p in self._reintroduce if p & touched}
        self._reintroduce -= again
        for pair in sorted(again & self.introduced.pairs, key=sorted):
            a, b = sorted(pair)
            self._introduce(a, b, snap)
        self._refresh_tickets()
        relay = self.relay() if self.relay is not None else None
        if relay is not None and self._usable != allowed:
            relay.allow_only(frozenset(self._usable))
        self.gateways.push_renewals(snap, systems, [n for n in sorted(touched)
                                                    if n in self.sessions], now,
                                    lambda name, msg: self.sessions[name].send(msg))
        return True

    def _views(self, systems: dict[str, System], now: int) -> list[SystemView]:
        """A SystemView of every system, reused from the last full pass for a system whose
        record (the store hands out the same System for an unchanged row) and usability are
        the same: a full pass over 10,000 systems allocates nothing for them."""
        views, known = [], self._view_of
        self._view_of = {}
        for name, system in systems.items():
            ok = usable(system, now)
            cached = known.get(name)
            if cached is None or cached[0] is not system or cached[1].usable != ok:
                cached = (system, SystemView(name, system.tags, ok))
            self._view_of[name] = cached
            views.append(cached[1])
        return views

    def _remote_changed(self, name: str, p: Presence) -> None:
        """Another node's system: its pairs are introduced again when its report changed."""
        old = self.remote.get(name)
        if old is not None and (old.candidates, old.nat, old.node) != (p.candidates, p.nat,
                                                                       p.node):
            self._reintroduce.update(self.introduced.of(name))

    def _close_unusable(self, names: list[str], snap: Snapshot) -> None:
        """Close the sessions (of ``names``) of systems that lost their standing, or whose
        certificate was revoked."""
        for name in names:
            session = self.sessions.get(name)
            if session is None:
                continue
            system = snap.systems.get(name)
            if (system is None or not usable(system, snap.now)
                    or session.serial in snap.revoked_serials):
                log.info("control: closing %s (%s)", name, _reason(system, snap.now))
                session.send({"type": "error", "error": "system is not active"})
                self.leave(session)

    def _push_crl(self, crl: dict[str, Any] | None, snap: Snapshot) -> None:
        if crl is not None:
            self._crl_number = snap.crl_number
            for session in self.sessions.values():
                session.send(crl)

    def _send_intents(self, names: list[str], intents: list[IntentRow], now: int) -> None:
        """Each of the connected ``names`` its own live intents' peers, when they changed."""
        stated: dict[str, list[str]] = {}  # from -> peers of its live intents (one pass)
        for r in intents:
            if r.exp is None or now < r.exp:
                stated.setdefault(r.from_name, []).append(r.to_name)
        for name in names:
            session = self.sessions[name]
            mine = tuple(sorted(stated.get(name, ())))
            if mine != session.sent_intents:
                session.sent_intents = mine
                session.send({"type": "intents", "peers": list(mine)})

    def _decide(self, snap: Snapshot, current: set[Pair], dormant: set[Pair],
                mutual: set[Pair], wanted: set[Pair], online: set[str]) -> None:
        """Withdraw the pairs of ``current`` (introduced) not ``wanted``, settle ``dormant``,
        introduce the ``wanted`` not introduced. ``mutual``: the mutual pairs among the
        systems decided; ``online``: the systems online (with a current certificate)."""
        systems, now = snap.systems, snap.now
        dormant = set(dormant)
        for pair in sorted(current - wanted, key=sorted):
            self.introduced.discard(pair)
            a, b = sorted(pair)
            unusable = [x for x in (a, b) if x not in systems or not usable(systems[x], now)]
            if unusable:
                reason = _reason(systems.get(unusable[0]), now)
            elif not (a in online and b in online):
                reason = "offline"
            else:
                reason = "intent"
            if reason == "offline":  # a hint: their session may go on (see _settle_dormant)
                self._dormant.add(pair)
                dormant.add(pair)
            for me, other in ((a, b), (b, a)):
                if me in self.sessions:
                    self.sessions[me].send(Withdrawal(other, reason).to_json())
            log.info("control: withdrew %s <-> %s (%s)", a, b, reason)
            self.platform.metrics.withdrawals.labels(reason).inc()
        self._settle_dormant(systems, dormant, mutual, wanted, now)
        for pair in sorted(wanted - current - self.introduced.pairs, key=sorted):
            a, b = sorted(pair)
            if self._introduce(a, b, snap):
                self.introduced.add(pair)
                log.info("control: introduced %s <-> %s", a, b)

    def _settle_dormant(self, systems: dict[str, System], dormant: set[Pair],
                        mutual: set[Pair], wanted: set[Pair], now: int) -> None:
        """Pairs withdrawn as "offline" may still hold a working session (agents keep it).
        When such a pair (of ``dormant``: those of the systems decided) ends for a real
        reason (intent gone, revoked, disabled, expired, removed) while one side is offline,
        the side that is online is told that reason, so its session ends; a pair wanted again
        is simply introduced again."""
        for pair in sorted(dormant, key=sorted):
            a, b = sorted(pair)
            unusable = [x for x in (a, b) if x not in systems or not usable(systems[x], now)]
            if unusable:
                reason = _reason(systems.get(unusable[0]), now)
            elif pair in wanted or pair in mutual:
                if pair in wanted:
                    self._dormant.discard(pair)
                continue
            else:
                reason = "intent"
            self._dormant.discard(pair)
            for me, other in ((a, b), (b, a)):
                if me in self.sessions:
                    self.sessions[me].send(Withdrawal(other, reason).to_json())
            log.info("control: withdrew %s <-> %s (%s, after offline)", a, b, reason)
            self.platform.metrics.withdrawals.labels(reason).inc()

    async def _reap_ephemeral(self, now: int) -> None:
        offline_since = now - self.ephemeral_grace
        if offline_since < self._started_at:
            return
        for name in await self.platform.store.reap_ephemeral(offline_since, set(self.sessions),
                                                              now):
            log.info("control: removed ephemeral system %s (offline for more than %d s)",
                     name, self.ephemeral_grace)

    def _peer(self, name: str) -> Session | Presence | None:
        """An online system: our session, or another node's presence row."""
        return self.sessions.get(name) or self.remote.get(name)

    def _introduce(self, a: str, b: str, snap: Snapshot) -> bool:
        """Send each of a, b that is connected here the other's introduction, with one punch
        time (a side on another node gets its introduction from that node)."""
        sides = {n: self._peer(n) for n in (a, b)}
        if any(p is None for p in sides.values()) or not (
                a in self.sessions or b in self.sessions):
            return False
        certs = {n: snap.certificates.get(n) for n in (a, b)}
        if any(c is None for c in certs.values()):
            self.platform.metrics.introductions.labels("no_certificate").inc()
            return False
        punch_at = time.time() + PUNCH_DELAY
        relay = self.relay() if self.relay is not None else None
        home = self.remote.get(a)  # a split pair meets at the relay of its first name's node
        relay_addr = None if relay is None else (relay.public if home is None else home.relay)
        for me, other in ((a, b), (b, a)):
            mine = self.sessions.get(me)
            peer = sides[other]
            cert = certs[other]
            if mine is None:
                continue
            assert cert is not None and peer is not None
            if home is None and relay is not None:  # this node's relay, in the side's family
                relay_addr = relay.public_for(mine.ipv6)
            # each side gets its own ticket ("me may relay to other"); a pair with no direct
            # path falls back to the relay with them
            offer, grants = self.gateways.intro_fields(snap, me, other)
            candidates = peer.candidates if mine.local and peer.local else tuple(
                c for c in peer.candidates if candidate_allowed(c, loopback=False))
            with_relay = relay is not None and relay_addr is not None
            intro = Introduction(other, cert.der, candidates, peer.nat, punch_at,
                                 relay=relay_addr if with_relay else None,
                                 relay_ticket=relay.ticket(me, other) if relay and with_relay
                                 else None,
                                 gateway=offer, grants=grants)
            mine.send(intro.to_json())
        if relay is not None:
            self._tickets_at[frozenset((a, b))] = time.monotonic()
        self.platform.metrics.introductions.labels("introduced").inc()
        return True

    def _refresh_tickets(self) -> None:
        """Relay tickets of introduced pairs, re-issued after half their lifetime (a relayed
        session outlives its first ticket): {"type": "relay_ticket", "peer", "ticket"}. The
        pairs are looked over at most every TICKET_CHECK seconds (a quarter of the refresh
        time if that is shorter), not on every pass: that is O(pairs)."""
        relay = self.relay() if self.relay is not None else None
        mono = time.monotonic()
        every = TICKET_CHECK if relay is None else min(
            TICKET_CHECK, relay.lifetime * TICKET_REFRESH_FRACTION / 4)
        if mono - self._tickets_checked < every:
            return
        self._tickets_checked = mono
        for pair in [p for p in self._tickets_at if p not in self.introduced]:
            del self._tickets_at[pair]
        if relay is None:
            return
        for pair, at in list(self._tickets_at.items()):
            if mono - at < relay.lifetime * TICKET_REFRESH_FRACTION:
                continue
            a, b = sorted(pair)
            if self._peer(a) is None or self._peer(b) is None:
                continue
            for me, other in ((a, b), (b, a)):
                if me not in self.sessions:
                    continue  # its own node renews its tickets
                ticket = base64.b64encode(relay.ticket(me, other)).decode()
                self.sessions[me].send({"type": "relay_ticket", "peer": other, "ticket": ticket})
            self._tickets_at[pair] = mono
            log.info("control: relay tickets renewed for %s <-> %s", a, b)

    async def crl_message(self) -> dict[str, Any]:
        der = await self.platform.authority.crl(self.platform.store, self.platform.clock())
        return {"type": "crl", "crl": base64.b64encode(der).decode(),
                "crl_number": await self.platform.store.crl_number()}

    async def welcome_crl(self) -> dict[str, Any]:
        """The CRL message for a welcome: built at most every CRL_REUSE seconds, and again
        once a pass saw a new CRL number (a session that joins before that pass gets the new
        list from the pass's push), so thousands of connects do not each read and build it."""
        mono = time.monotonic()
        cached = self._welcome_crl
        if (cached is not None and mono - cached[0] < CRL_REUSE
                and cached[1]["crl_number"] == self._crl_number):
            return cached[1]
        crl = await self.crl_message()
        self._welcome_crl = (mono, crl)
        return crl

    # -- tag policies ------------------------------------------------------------------------

    async def _drop_uncovered(self, snap: Snapshot) -> set[tuple[str, str]]:
        """Delete the counter-signed intents no policy covers any more (a tag was removed, a
        system left); the pairs deleted."""
        if all(r.policy is None for r in snap.intents):
            return set()  # no counter-signed intent: nothing to look at (and no O(systems) work)
        views = [SystemView(s.name, s.tags, usable(s, snap.now)) for s in snap.systems.values()]
        offers = {p.name: policy_offers(p.from_sel, p.to_sel, views) for p in snap.policies}
        deleted = set()
        for r in snap.intents:
            pair = (r.from_name, r.to_name)
            if r.policy is not None and pair not in offers.get(r.policy, set()):
                await self.platform.store.delete_intent(*pair, policy=r.policy)
                deleted.add(pair)
        return deleted

    def _offer_policies(self, views: list[SystemView], snap: Snapshot) -> None:
        """Offer CA-signed policy intents to online subjects (again after OFFER_RETRY if not
        counter-signed by then)."""
        offers: dict[str, set[tuple[str, str]]] = {
            p.name: policy_offers(p.from_sel, p.to_sel, views) for p in snap.policies
        }
        held = {(r.from_name, r.to_name) for r in snap.intents}
        now = snap.now
        mono = time.monotonic()
        current = {pair for pairs in offers.values() for pair in pairs}
        for online in self.sessions.values():
            # forget offers no policy makes any more, so a policy added again is offered again
            for pair in [p for p in online.offered if p not in current]:
                del online.offered[pair]
        for name, pairs in offers.items():
            for a, b in sorted(pairs):
                session = self.sessions.get(a)
                if session is None or (a, b) in held:
                    continue
                sent = session.offered.get((a, b))
                if sent is not None and mono - sent < OFFER_RETRY:
                    continue  # awaiting the counter-signature (lost ones are offered again)
                st = IntentStatement.new("policy", a, b, now, policy=name)
                session.offered[(a, b)] = mono
                session.send({"type": "policy_offer",
                              "offer": encode_signed(st, self.platform.authority.ca_key)})


HUB = web.AppKey("hub", Hub)  # the running hub in the aiohttp app (routes_control starts it)
