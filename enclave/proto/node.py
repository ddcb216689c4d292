"""The peer table of one node: handshakes, sessions, timers, paths — sans-I/O (aioquic style).

    I/O layer                              Node
    ---------                              ----
    datagram from the socket  --------->   receive_datagram(data, addr, now)
    send these                <---------   datagrams_to_send(now) -> [(bytes, addr)]
    sleep until               <---------   get_timer() -> deadline | None
    timer fired               --------->   handle_timer(now)
    fast path / agent         <---------   next_event() -> PeerKeysUpdated, SessionEstablished, ...
    fast path counters        --------->   report_activity(local_index, now, rx=.., tx_messages=..)

Every timer is the Node's: handshake retries, keepalives, rekeys, dead-peer detection, path
probes, proto/upkeep.py's per-peer upkeep (rtt probes, relay re-offers, reconnects) and path
watch (a silent current path -> PathFailed: the session moves to whatever answers first).
PeerKeysUpdated is the one event the fast path needs (keys, address, certified identity).

Addresses are opaque hashables to the Node (in practice enclave.discovery.PathAddr); the I/O
layer gives them in and gets them back.  Inbound dispatch by the first byte:

    INIT      enclave.proto.init_intake: MAC1, a repeat of a pending INIT (the cached RESPONSE,
              only to a source plausibly the initiator's), cookies and rate limits, validate_init,
              replay check -> simultaneous-initiation rule -> allocate index, RESPONSE
    RESPONSE  receiver index must name our outgoing handshake -> rate limit -> validate
              -> CONFIRM, pending keys (receive-only)
    COOKIE    receiver index must name our outgoing handshake, from an address its INIT went
    REPLY     to -> open (AD = its MAC1) -> keep the cookie for that address, send the INIT
              again with MAC2
    CONFIRM   receiver index must name a pending incoming handshake -> verify -> session,
              keepalive as acknowledgement
    DATA/CTRL receiver index -> keyset -> replay window -> AEAD open -> roaming, control

Anything else, or anything failing a check, is dropped without a reply.

Simultaneous initiation: when both sides have a handshake in flight, the side with the lower
system name keeps its own and ignores the other's INIT; the other abandons its own and responds.
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Callable, Hashable, Sequence

from enclave.discovery.candidates import (
    Candidate,
    CandidateKind,
    NatBehaviour,
    PathAddr,
)
from enclave.discovery.paths import PathManager
from enclave.discovery.punch import PUNCH_DURATION
from enclave.proto import timing as T
from enclave.proto.cookie import open_cookie_reply
from enclave.proto.deadlines import peer_deadlines, rekey_at
from enclave.proto.events import (
    DataReceived,
    Event,
    HandshakeFailed,
    PathChanged,
    PathFailed,
    PeerKeysUpdated,
    PeerRoamed,
    Reconnecting,
    SessionClosed,
    SessionEstablished,
    SessionRekeyed,
    UseRelay,
)
from enclave.proto.handshake import (
    InitiatorHandshake,
    Intends,
    LocalCredentials,
    ResponderHandshake,
    ValidatedInit,
    ValidatePeer,
)
from enclave.proto.init_intake import InitIntake
from enclave.proto.keys import SessionKeys
from enclave.proto.peerstate import Closing as _Closing
from enclave.proto.peerstate import PeerState as _Peer
from enclave.proto.ping import PingTracker
from enclave.proto.ratelimit import KeyedRateLimiter
from enclave.proto.session import KeyLimit, Keyset
from enclave.proto.upkeep import DEAD, PROBE, Nudge, Probe, Upkeep
from enclave.proto.wire import (
    CONFIRM_SIZE,
    CTRL_CLOSE,
    CTRL_KEEPALIVE,
    CTRL_PING,
    CTRL_PONG,
    CTRL_PROBE,
    CTRL_PROBE_REPLY,
    KEEPALIVE_FLAG_REPLY,
    MSG_CONTROL,
    MSG_COOKIE_REPLY,
    MSG_DATA,
    MSG_HANDSHAKE_CONFIRM,
    MSG_HANDSHAKE_INIT,
    MSG_HANDSHAKE_INIT_V1,
    MSG_HANDSHAKE_RESPONSE,
    RESPONSE_FIXED_SIZE,
    WIRE_CLOSE_REASONS,
    CloseReason,
    Control,
    WireError,
    decode_control,
    message_type,
    unpack_transport_header,
)

Addr = Hashable


class Node:
    def __init__(
        self,
        creds: LocalCredentials,
        validate_peer: ValidatePeer,
        intends: Intends,
        *,
        wall_offset: float = 0.0,
        rng: random.Random | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        local_nat: NatBehaviour = NatBehaviour.UNKNOWN,
    ) -> None:
        """`wall_offset` maps `now` (monotonic) to Unix time for INIT timestamps."""
        self.creds = creds
        self.name = creds.name
        self._validate_peer = validate_peer
        self._intends = intends
        self._wall_offset = wall_offset
        self._rng = rng if rng is not None else random.Random(int.from_bytes(os.urandom(8)))
        self._random_bytes = random_bytes
        self._local_nat = local_nat
        self._peers: dict[str, _Peer] = {}
        self._indices: dict[int, tuple[_Peer, Keyset | None]] = {}  # None = a handshake
        self._closing: list[_Closing] = []
        self._last_ts_sent = 0
        self._limiter = KeyedRateLimiter(
            T.INIT_RATE_PER_SOURCE,
            T.INIT_BURST_PER_SOURCE,
            global_rate=T.INIT_RATE_GLOBAL,
            global_burst=T.INIT_BURST_GLOBAL,
            max_keys=T.RATE_LIMIT_TABLE,
        )
        self._out: deque[tuple[bytes, Addr]] = deque()
        self._events: deque[Event] = deque()
        self._drops: dict[str, int] = {}  # silent drops by reason (counters())
        self._intake = InitIntake(creds, validate_peer, intends, random_bytes)  # INIT admission
        self._pings = PingTracker(lambda: int.from_bytes(self._random_bytes(8), "little"))
        self._upkeep = Upkeep(lambda: self._rng.uniform(0.9, 1.1))  # rtt probes, relay
        # re-offers, reconnects: protocol policy kept here, not in the I/O shell

    # ------------------------------------------------------------------ public API
    def connect(
        self,
        peer: str,
        candidates: Sequence[Candidate],
        now: float,
        *,
        punch_at: float | None = None,
        peer_key: bytes,
    ) -> None:
        """Start (or refresh) connecting to `peer` at its candidate addresses.

        Probing (the INIT doubles as the punch probe before a session exists) starts at
        `punch_at` (default: now), so both sides can start together.  `peer_key` is the peer's
        certified Ed25519 public key (from the certificate in the introduction): our INITs
        carry a MAC1 made with it, without which the peer spends no work on them.
        """
        if peer == self.name:
            raise ValueError("cannot connect to ourselves")
        p = self._peers.get(peer)
        if p is None:
            p = self._peers[peer] = _Peer(peer)
        p.wanted = True
        p.relay_reported = False
        p.peer_key = peer_key
        p.candidates = tuple(candidates)
        self._upkeep.cancel_reconnect(peer)
        start = now if punch_at is None else max(now, punch_at)
        p.paths = PathManager(candidates, start, self._rng, local_nat=self._local_nat)
        if p.current is None and p.outbound is None and p.inbound is None:
            self._start_handshake(p, now, send=False)
            # the punch rounds carry this INIT; a fresh one only once they are over
            p.out_next = start + PUNCH_DURATION

    def add_candidate(self, peer: str, candidate: Candidate, now: float) -> None:
        """E.g. a relay after UseRelay; a relay candidate is used at once if nothing better."""
        p = self._peers.get(peer)
        if p is None or p.paths is None:
            return
        if candidate.kind is CandidateKind.RELAY:  # re-offered until a session is up
            self._upkeep.relay_offered(peer, candidate, now)
        self._offer(p, candidate, now)

    def _offer(self, p: _Peer, candidate: Candidate, now: float) -> None:
        assert p.paths is not None
        p.paths.add_candidate(candidate)
        if p.current is None and p.outbound is not None:
            self._send_init(p, candidate.addr, now)

    def close(self, peer: str, now: float, reason: CloseReason = CloseReason.LOCAL) -> None:
        """Close locally (intent withdrawn, certificate expired/revoked); the peer is told.
        A reconnect still pending for a lost session is cancelled."""
        p = self._peers.get(peer)
        if p is not None:
            self._close(p, now, reason, notify=True)
        else:
            self._upkeep.forget(peer)

    def revalidate(self, now: float) -> None:
        """Re-check every peer's certificate and our intent (after a CRL update, on a clock
        tick, after policy changes) and close the sessions that no longer pass."""
        for p in list(self._peers.values()):
            if p.cert is None:
                continue
            try:
                ident = self._validate_peer(p.cert)
                ok = ident is not None and ident.name == p.name
            except Exception:
                ok = False
            if not ok:
                self._close(p, now, CloseReason.CERT_INVALID, notify=True)
            elif not self._intends(p.name):
                self._close(p, now, CloseReason.LOCAL, notify=True)

    def rehandshake(self, now: float) -> None:
        """Our certificate was renewed (``creds`` replaced): start a handshake now with every
        peer that has a session, so it authenticates the new certificate and its data plane
        binds the identity it names (e.g. new gateway routes) without waiting for the next
        rekey. A peer takes such an INIT at once however young its session is (the certificate
        differs from the session's: not a late punch INIT). A handshake that was in flight with
        the old certificate completes, and its session is handshaken again at once (rekey_at:
        keys whose handshake presented a certificate other than ``creds`` are due)."""
        for p in self._peers.values():
            if p.current is not None:
                self._start_handshake(p, now, send=True)

    def send_data(self, peer: str, frame: bytes, now: float) -> bool:
        """Python reference data path: encrypt one frame (the fast path does this in C)."""
        p = self._peers.get(peer)
        if p is None or p.current is None or p.addr is None:
            return False
        try:
            msg = p.current.seal_data(frame, now)
        except KeyLimit:
            return False
        self._send_to_peer(p, msg, p.addr, now)
        return True

    def ping(self, peer: str, now: float) -> bool:
        """Send an authenticated PROBE over the current path; its reply updates rtt(peer)."""
        p = self._peers.get(peer)
        if p is None or p.current is None or p.paths is None or not isinstance(p.addr, PathAddr):
            return False
        p.paths.learn(p.addr)
        probe_id = p.paths.new_probe(p.addr, now)
        msg = self._seal_control(p, p.current, Control(CTRL_PROBE, probe_id), now)
        if msg is None:
            return False
        self._send_to_peer(p, msg, p.addr, now)
        return True

    def send_ping(self, peer: str, now: float) -> int | None:
        """An operator's ping (`enclave ping`): PING on the session's current path.

        Returns the ping's id (a PingAnswered event with it follows the authenticated PONG),
        or None when there is no session with `peer`."""
        p = self._peers.get(peer)
        if p is None or p.current is None or p.addr is None:
            return None
        ping_id = self._pings.start(p.name, p.addr, now)
        msg = self._seal_control(p, p.current, Control(CTRL_PING, ping_id), now)
        if msg is None:
            return None
        self._send_to_peer(p, msg, p.addr, now)
        return ping_id

    def _on_ping(self, p: _Peer, ks: Keyset, ctl: Control, addr: Addr, now: float) -> None:
        """PING / PONG that opened under `ks` (authenticated): answer a PING in that session
        on the path it came from; match a PONG to our outstanding ping."""
        if ctl.kind == CTRL_PING:
            msg = self._seal_control(p, ks, Control(CTRL_PONG, ctl.value), now)
            if msg is not None:
                self._send(msg, addr)
            return
        answered = self._pings.answer(p.name, ctl.value, now)
        if answered is None:
            self._drop("pong_unexpected")
        else:
            self._events.append(answered)

    def rtt(self, peer: str) -> float | None:
        """Smoothed round-trip time (seconds) of the current path, from ping()/probe replies."""
        p = self._peers.get(peer)
        if p is None or p.paths is None or not isinstance(p.addr, PathAddr):
            return None
        return p.paths.rtt_of(p.addr)

    def report_activity(
        self, local_index: int, now: float, *, rx: bool = False, tx_messages: int | None = None
    ) -> None:
        """The fast path tells what it did with a keyset: received on it, sent N messages."""
        entry = self._indices.get(local_index)
        if entry is None or entry[1] is None:
            return
        p, ks = entry[0], entry[1]
        if rx:
            p.heard(now)  # over the path the fast path uses: the current one
            if ks is p.pending:
                self._promote_pending(p, now)
        if tx_messages is not None and tx_messages > ks.external_tx:
            ks.external_tx = tx_messages
            p.last_tx = now

    def peer_roamed(self, local_index: int, addr: Addr, now: float) -> bool:
        """The fast path accepted the newest DATA packet on key `local_index` from `addr`.

        Moves the session exactly as an authenticated CONTROL packet from there would (see
        _on_transport): only for the peer's current keys, and only the newest packet counts
        -- the fast path applies that rule to its DATA replay window (the Node never sees those
        counters) and reports only a packet newer than any it accepted on the key.  Returns
        True when the session's address changed (PeerRoamed + PeerKeysUpdated follow, so the
        next key update carries the new address instead of resetting the fast path to the old
        one)."""
        entry = self._indices.get(local_index)
        if entry is None or entry[1] is None:
            self._drop("roamed_unknown_index")
            return False
        p, ks = entry[0], entry[1]
        if self._peers.get(p.name) is not p or ks is not p.current:
            self._drop("roamed_stale_keys")
            return False
        p.last_rx = max(p.last_rx, now)
        if addr == p.addr:
            return False
        self._move(p, addr, now)
        return True

    def counters(self) -> dict[str, int]:
        """What the Node dropped silently, by reason (silent on the wire, visible to the
        operator: `enclave status --json`)."""
        return dict(self._drops)

    def _drop(self, reason: str) -> None:
        self._drops[reason] = self._drops.get(reason, 0) + 1

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out = list(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def session(self, peer: str) -> SessionKeys | None:
        p = self._peers.get(peer)
        return None if p is None or p.current is None else p.current.keys

    def session_created(self, peer: str) -> float | None:
        """`now` of the handshake that made the current keys."""
        p = self._peers.get(peer)
        return None if p is None or p.current is None else p.current.created

    def peer_addr(self, peer: str) -> Addr | None:
        p = self._peers.get(peer)
        return None if p is None else p.addr

    def peers(self) -> list[str]:
        return sorted(self._peers)

    def state_size(self) -> int:
        """Entries in all per-peer tables (tests assert strangers do not grow it)."""
        return len(self._peers) + len(self._indices) + len(self._closing) + len(self._intake)

    # ------------------------------------------------------------------ timers
    def get_timer(self) -> float | None:
        times: list[float] = []
        for p in self._peers.values():
            times.extend(peer_deadlines(p, self.creds.cert_der))  # enclave.proto.deadlines
        times.extend(c.next_send for c in self._closing)
        upkeep = self._upkeep.deadline()
        if upkeep is not None:
            times.append(upkeep)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for c in list(self._closing):
            if now >= c.next_send:
                self._send_close(c, now)
        for p in list(self._peers.values()):
            self._peer_timers(p, now)
        for act in self._upkeep.due(now):
            q = self._peers.get(act.peer)
            if isinstance(act, Probe):
                self.ping(act.peer, now)
            elif isinstance(act, Nudge):
                if q is None or q.current is not None or q.paths is None:
                    self._upkeep.stop_nudging(act.peer)
                else:
                    self._offer(q, act.candidate, now)
            elif q is None or q.current is None:  # Reconnect
                self.connect(act.peer, act.candidates, now, peer_key=act.peer_key)
                self._events.append(Reconnecting(act.peer))

    def _peer_timers(self, p: _Peer, now: float) -> None:
        # keys past their hard limit
        if p.previous is not None and (now >= p.previous_until or p.previous.expired(now)):
            self._drop_keys(p.previous)
            p.previous = None
            self._publish(p)
        if p.pending is not None and p.pending.expired(now):
            self._drop_keys(p.pending)
            p.pending = None
            self._publish(p)
        if p.current is not None and p.current.expired(now):
            self._close(p, now, CloseReason.KEYS_EXPIRED, notify=False)
            return
        # incoming handshake that never got its CONFIRM
        if p.inbound is not None and now >= p.in_deadline:
            self._indices.pop(p.inbound.local_index, None)
            p.inbound = None
            if p.current is None and p.pending is None:
                self._schedule_retry(p, now)
        # CONFIRM retransmission until the responder's first packet arrives
        ks = p.pending
        if ks is not None and ks.confirm_next is not None and now >= ks.confirm_next:
            if ks.confirm_sends >= T.CONFIRM_MAX_SENDS:
                self._drop_keys(ks)
                p.pending = None
                self._publish(p)
                if p.current is None:
                    self._schedule_retry(p, now)
            else:
                assert ks.confirm_msg is not None and p.addr is not None
                self._send(ks.confirm_msg, p.addr)
                ks.confirm_sends += 1
                ks.confirm_next = now + T.CONFIRM_RETRY
        # outgoing handshake retries with backoff
        if p.out_next is not None and now >= p.out_next:
            busy = p.current is not None or p.pending is not None or p.inbound is not None
            if p.outbound is None and (busy or not p.wanted):
                p.out_next = None
            elif p.out_attempts >= T.HANDSHAKE_MAX_ATTEMPTS:
                self._abort_outbound(p)
                p.out_next = None
                self._events.append(HandshakeFailed(p.name, p.out_attempts))
                p.out_attempts = 0
                if p.current is None:
                    p.wanted = False
            else:
                self._start_handshake(p, now, send=True)
        # punch rounds / path probes
        if p.paths is not None:
            for addr in p.paths.due(now):
                self._probe(p, addr, now)
            if p.paths.relay_due(now) and not p.relay_reported:  # the punch failed
                p.relay_reported = True
                self._events.append(UseRelay(p.name))
        cur = p.current
        if cur is None:
            return
        # rekey
        if p.outbound is None and p.inbound is None and p.pending is None:
            if now >= rekey_at(cur, self.creds.cert_der) or cur.sent >= T.REKEY_AFTER_MESSAGES:
                self._start_handshake(p, now, send=True)
        # dead peer detection
        if now >= p.last_rx + T.DEAD_PEER_TIMEOUT:
            self._close(p, now, CloseReason.DEAD_PEER, notify=True)
            return
        verdict = p.watch.check(now, p.path_rx, p.last_tx)  # is the current path alive?
        if verdict == PROBE:
            self.ping(p.name, now)
        elif verdict == DEAD and p.paths is not None and isinstance(p.addr, PathAddr):
            p.paths.path_failed(p.addr, now)  # every path answers afresh; relays probed
            p.failing = True
            self._events.append(PathFailed(p.name, p.addr))
        if now >= p.last_rx + T.DEAD_PEER_PING_AFTER and now >= p.last_ping + T.PING_INTERVAL:
            p.last_ping = now
            self._send_control(p, Control(CTRL_KEEPALIVE, KEEPALIVE_FLAG_REPLY), now)
        # keepalive holds NAT mappings open while idle
        if now >= p.last_tx + p.keepalive_after:
            self._send_control(p, Control(CTRL_KEEPALIVE, 0), now)

    # ------------------------------------------------------------------ inbound
    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        try:
            kind = message_type(data)
        except WireError:
            self._drop("malformed")
            return
        if kind == MSG_DATA or kind == MSG_CONTROL:
            self._on_transport(data, addr, now)
        elif kind == MSG_HANDSHAKE_INIT:
            self._on_init_datagram(data, addr, now)
        elif kind == MSG_COOKIE_REPLY:
            self._on_cookie_reply(data, addr, now)
        elif kind == MSG_HANDSHAKE_INIT_V1:
            self._drop("init_legacy")
        elif kind == MSG_HANDSHAKE_RESPONSE:
            self._on_response(data, addr, now)
        elif kind == MSG_HANDSHAKE_CONFIRM:
            self._on_confirm(data, addr, now)
        else:
            self._drop("unknown_type")

    def _on_init_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """enclave.proto.init_intake before any work on the peer table: MAC1, the cached
        RESPONSE to a repeated INIT (only at a plausible source), cookies, rate limits,
        certificate, intent, signature, replay."""
        got = self._intake.receive(data, addr, now, self._peers.values())
        if got.reply is not None:
            self._send(got.reply, addr)
        if got.drop is not None:
            self._drop(got.drop)
        if got.init is not None:
            self._on_init(got.init, addr, now)

    def _on_cookie_reply(self, data: bytes, addr: Addr, now: float) -> None:
        """The responder is under load: keep its cookie for `addr` and send the INIT again
        with MAC2 (once per new cookie, so a replayed reply makes us send nothing); only from
        an address this handshake's INIT went to."""
        index = int.from_bytes(data[4:8], "little")
        entry = self._indices.get(index)
        hs = entry[0].outbound if entry is not None and entry[1] is None else None
        if entry is None or hs is None or hs.local_index != index:
            self._drop("cookie_unknown_index")
            return
        if addr not in entry[0].out_sent_to:
            # a cookie is good for the address our INIT went to, and our answer goes where the
            # reply came from: a forged reply from elsewhere would aim our INIT at anyone
            self._drop("cookie_wrong_source")
            return
        got = open_cookie_reply(data, hs.responder_key, hs.mac1)
        if got is None:
            self._drop("cookie_invalid")
            return
        if entry[0].cookies.store(addr, got[1], now):
            self._send(hs.message(got[1]), addr)

    def _on_init(self, v: ValidatedInit, addr: Addr, now: float) -> None:
        """A new INIT that passed the intake: answer it unless the rules below say not."""
        name = v.peer.name
        p = self._peers.get(name)
        if p is not None:
            if (p.current is not None and now < p.established_at + T.MIN_REHANDSHAKE_INTERVAL
                    and v.init.cert == p.cert):
                return  # a late punch INIT of the handshake that just finished (a renewed
                # certificate is news: Node.rehandshake)
            if p.outbound is not None:
                if self.name < name:
                    # simultaneous initiation: ours wins, theirs is ignored; ours also goes to
                    # where theirs came from, which may be the only address that reaches them
                    # (a peer-reflexive mapping of an address-and-port-dependent NAT)
                    if p.current is None:
                        self._send_init(p, addr, now)
                    return
                self._abort_outbound(p)
        self._intake.accept(v)
        if p is None:
            p = self._peers[name] = _Peer(name)
        if p.inbound is not None:
            self._indices.pop(p.inbound.local_index, None)
        index = self._new_index()
        p.inbound = ResponderHandshake(
            self.creds, v, local_index=index, random_bytes=self._random_bytes
        )
        self._indices[index] = (p, None)
        p.in_addr = addr
        p.in_deadline = now + T.HANDSHAKE_TIMEOUT
        p.in_resends = 0
        self._send(p.inbound.response_bytes, addr)

    def _on_response(self, data: bytes, addr: Addr, now: float) -> None:
        if len(data) < RESPONSE_FIXED_SIZE:
            self._drop("malformed")
            return
        entry = self._indices.get(int.from_bytes(data[8:12], "little"))
        if entry is None or entry[1] is not None:
            self._drop("response_unknown_index")
            return
        p = entry[0]
        hs = p.outbound
        if hs is None:
            self._drop("response_unknown_index")
            return
        if not self._limiter.allow(addr, now):
            self._drop("response_rate_limited")
            return
        got = hs.receive_response(data, self._validate_peer, self._intends)
        if got is None:
            self._drop("response_invalid")
            return
        confirm, result = got
        if result.peer.name != p.name:
            self._drop("response_wrong_peer")
            return  # someone else answered: not who we asked for
        p.outbound = None
        p.out_next = None
        p.out_attempts = 0
        ks = Keyset(result, now, confirmed=False)
        ks.our_cert = hs.creds.cert_der
        ks.confirm_msg = confirm
        ks.confirm_sends = 1
        ks.confirm_next = now + T.CONFIRM_RETRY
        if p.pending is not None:
            self._drop_keys(p.pending)
        p.pending = ks
        self._indices[ks.local_index] = (p, ks)
        p.identity, p.cert = result.peer, result.peer_cert
        p.peer_key = result.peer.public_key
        if p.current is None:
            p.addr = addr
        if p.paths is not None and isinstance(addr, PathAddr):
            p.paths.confirm(addr, now)
        p.heard(now, addr)
        self._send(confirm, p.addr if p.addr is not None else addr)
        self._publish(p)

    def _on_confirm(self, data: bytes, addr: Addr, now: float) -> None:
        if len(data) != CONFIRM_SIZE:
            self._drop("malformed")
            return
        entry = self._indices.get(int.from_bytes(data[4:8], "little"))
        if entry is None:
            self._drop("confirm_unknown_index")
            return
        p, existing = entry
        if existing is not None:
            # a repeated CONFIRM (our acknowledgement was lost): acknowledge again
            if existing.confirm_msg == data and existing is p.current:
                if self._limiter.allow(addr, now):
                    self._send_control(p, Control(CTRL_KEEPALIVE, 0), now)
            return
        hs = p.inbound
        if hs is None:
            self._drop("confirm_unknown_index")
            return
        if not self._limiter.allow(addr, now):
            self._drop("confirm_rate_limited")
            return
        result = hs.receive_confirm(data)
        if result is None:
            self._drop("confirm_invalid")
            return
        p.inbound = None
        ks = Keyset(result, now, confirmed=True)
        ks.our_cert = hs.creds.cert_der
        ks.confirm_msg = bytes(data)
        self._indices[ks.local_index] = (p, ks)
        p.identity, p.cert = result.peer, result.peer_cert
        p.peer_key = result.peer.public_key
        p.addr = addr
        if p.paths is not None and isinstance(addr, PathAddr):
            p.paths.confirm(addr, now)
        p.heard(now, addr)
        self._install_current(p, ks, now)
        self._send_control(p, Control(CTRL_KEEPALIVE, 0), now)  # the acknowledgement

    def _on_transport(self, data: bytes, addr: Addr, now: float) -> None:
        try:
            hdr = unpack_transport_header(data)
        except WireError:
            self._drop("malformed")
            return
        entry = self._indices.get(hdr.receiver)
        if entry is None or entry[1] is None:
            # e.g. DATA the fast path punted: keys it does not hold (closed, never ours)
            self._drop("data_unknown_index" if hdr.msg_type == MSG_DATA
                       else "control_unknown_index")
            return
        p, ks = entry[0], entry[1]
        if self._peers.get(p.name) is not p:
            self._drop("closed_session")
            return  # keys of a closed session, kept only to resend our CLOSE: nothing to do
        plain = ks.open(hdr.msg_type, hdr.counter, data, now)
        if plain is None:
            self._drop("replayed_or_forged")
            return
        p.heard(now, addr)  # keeps the path watch quiet only when over the current path
        if ks is p.pending:
            self._promote_pending(p, now)
        ctl: Control | None = None
        if hdr.msg_type == MSG_CONTROL:
            try:
                ctl = decode_control(plain)
            except WireError:
                self._drop("control_malformed")
                return
        probing = ctl is not None and ctl.kind in (CTRL_PROBE, CTRL_PROBE_REPLY)
        if not probing and addr != p.addr and ks is p.current:
            window = ks.data_rx if hdr.msg_type == MSG_DATA else ks.ctl_rx
            if hdr.counter == window.highest:  # only the newest packet moves the session
                self._move(p, addr, now)
        if ctl is None:
            self._events.append(DataReceived(p.name, plain))
            return
        if ctl.kind == CTRL_KEEPALIVE:
            if ctl.value & KEEPALIVE_FLAG_REPLY:
                self._send_control(p, Control(CTRL_KEEPALIVE, 0), now)
        elif ctl.kind == CTRL_CLOSE:
            self._close(p, now, CloseReason.REMOTE, notify=False)
        elif ctl.kind in (CTRL_PING, CTRL_PONG):
            self._on_ping(p, ks, ctl, addr, now)
        elif ctl.kind == CTRL_PROBE:
            msg = self._seal_control(p, ks, Control(CTRL_PROBE_REPLY, ctl.value), now)
            if msg is not None:
                self._send(msg, addr)  # back where it came from: that path works
        elif ctl.kind == CTRL_PROBE_REPLY and p.paths is not None and isinstance(addr, PathAddr):
            if p.paths.probe_reply(ctl.value, addr, now):
                self._maybe_switch_path(p, now)

    # ------------------------------------------------------------------ sessions
    def _move(self, p: _Peer, addr: Addr, now: float) -> None:
        """The peer roamed: its authentic newest packet came from `addr`."""
        if p.paths is not None and isinstance(addr, PathAddr):
            p.paths.learn(addr)
            if isinstance(p.addr, PathAddr) and p.addr != addr:
                p.paths.peer_left(p.addr, addr)  # they answer afresh before we go back
        p.moved(addr, now)
        self._upkeep.path_moved(p.name, now)  # the new path's rtt, measured now
        self._events.append(PeerRoamed(p.name, addr))
        self._publish(p)

    def _promote_pending(self, p: _Peer, now: float) -> None:
        ks = p.pending
        assert ks is not None
        p.pending = None
        ks.confirmed = True
        ks.confirm_next = None
        self._install_current(p, ks, now)

    def _install_current(self, p: _Peer, ks: Keyset, now: float) -> None:
        old = p.current
        if p.previous is not None:
            self._drop_keys(p.previous)
            p.previous = None
        if old is not None:
            p.previous = old
            p.previous_until = now + T.KEY_OVERLAP
        p.current = ks
        p.last_ping = float("-inf")
        self._publish(p)  # keys reach the fast path before anyone is told the session is up
        if not p.established:
            p.established = True
            p.last_tx = now
            p.keepalive_after = self._rng.uniform(T.KEEPALIVE_MIN, T.KEEPALIVE_MAX)
            self._upkeep.session_up(p.name, now)
            assert p.identity is not None and p.addr is not None
            self._events.append(SessionEstablished(p.name, p.identity, p.addr, ks.initiator))
        else:
            self._events.append(SessionRekeyed(p.name, ks.local_index))
        p.established_at = now

    def _maybe_switch_path(self, p: _Peer, now: float) -> None:
        assert p.paths is not None
        best = p.paths.best()
        if best is None or best == p.addr:
            p.failing = p.failing and best is None  # the failed path answered again
            return
        cur_rank = p.paths.rank_of(p.addr) if isinstance(p.addr, PathAddr) else None
        new_rank = p.paths.rank_of(best)
        assert new_rank is not None
        same = new_rank == cur_rank
        if cur_rank is not None and not p.failing and (
                new_rank > cur_rank or (same and not p.paths.worth_moving(p.addr, best))):
            return  # a failed path is left for whatever answers first, however it ranks; of
            # equal rank, one worth moving to (candidates.worth_moving: RTT, IPv6, hysteresis)
        p.moved(best, now)  # a probe reply just came over it
        self._upkeep.path_moved(p.name, now)
        self._events.append(PathChanged(p.name, best, new_rank))
        self._publish(p)
        # a keepalive on the new path makes the peer roam over to it too
        self._send_control(p, Control(CTRL_KEEPALIVE, 0), now)

    def _close(self, p: _Peer, now: float, reason: CloseReason, *, notify: bool) -> None:
        if notify and p.current is not None and p.addr is not None and reason in WIRE_CLOSE_REASONS:
            c = _Closing(p.current, p.addr, reason, T.CLOSE_SENDS, now)
            self._send_close(c, now)
            if c.sends_left > 0:
                self._closing.append(c)
        had_session = p.established
        for ks in p.keysets():
            if not any(c.keys is ks for c in self._closing):
                self._drop_keys(ks)
        p.current = p.pending = p.previous = None
        self._abort_outbound(p)
        if p.inbound is not None:
            self._indices.pop(p.inbound.local_index, None)
            p.inbound = None
        del self._peers[p.name]
        self._pings.forget_peer(p.name)
        if p.snapshot is not None and (p.snapshot.tx is not None or p.snapshot.rx):
            self._events.append(PeerKeysUpdated(p.name, None, None, ()))
        again = had_session and p.wanted and reason not in (CloseReason.LOCAL,
                                                            CloseReason.CERT_INVALID)
        self._upkeep.session_lost(p.name, now, reconnect=p.candidates if again else None,
                                  peer_key=p.peer_key)
        if had_session:
            self._events.append(SessionClosed(p.name, reason))

    def _send_close(self, c: _Closing, now: float) -> None:
        try:
            msg = c.keys.seal_control(Control(CTRL_CLOSE, int(c.reason)).encode(), now)
        except KeyLimit:
            msg = None
        if msg is not None:
            self._send(msg, c.addr)
        c.sends_left -= 1
        c.next_send = now + T.CLOSE_INTERVAL
        if c.sends_left <= 0 or msg is None:
            if c in self._closing:
                self._closing.remove(c)
            self._drop_keys(c.keys)

    def _drop_keys(self, ks: Keyset) -> None:
        entry = self._indices.get(ks.local_index)
        if entry is not None and entry[1] is ks:
            del self._indices[ks.local_index]

    def _publish(self, p: _Peer) -> None:
        """The one event the fast path needs: keys as the handshake made them, the address,
        and the certified identity (set only once a handshake was authenticated)."""
        tx = p.current.keys if p.current is not None else None
        rx = tuple(k.keys for k in p.keysets())
        snap = PeerKeysUpdated(p.name, p.addr, tx, rx, p.identity if tx or rx else None)
        if snap != p.snapshot:
            p.snapshot = snap
            self._events.append(snap)

    # ------------------------------------------------------------------ handshakes
    def _new_index(self) -> int:
        while True:
            index = int.from_bytes(self._random_bytes(4), "little")
            if index and index not in self._indices:
                return index

    def _timestamp(self, now: float) -> int:
        ts = max(int((now + self._wall_offset) * 1e9), self._last_ts_sent + 1)
        self._last_ts_sent = ts
        return ts

    def _retry_delay(self, attempt: int) -> float:
        base = min(T.HANDSHAKE_RETRY_BASE * 2 ** (attempt - 1), T.HANDSHAKE_RETRY_MAX)
        return base * self._rng.uniform(1.0, 1.25)

    def _abort_outbound(self, p: _Peer) -> None:
        if p.outbound is not None:
            self._indices.pop(p.outbound.local_index, None)
            p.outbound = None

    def _schedule_retry(self, p: _Peer, now: float) -> None:
        if p.wanted or p.current is not None:
            p.out_next = now + self._retry_delay(max(1, p.out_attempts))

    def _start_handshake(self, p: _Peer, now: float, *, send: bool) -> None:
        self._abort_outbound(p)
        if p.peer_key is None:  # neither introduced nor authenticated: nobody to MAC for
            p.out_next = None
            return
        index = self._new_index()
        p.out_sent_to = set()
        p.outbound = InitiatorHandshake(
            self.creds,
            responder_key=p.peer_key,
            local_index=index,
            timestamp=self._timestamp(now),
            random_bytes=self._random_bytes,
        )
        self._indices[index] = (p, None)
        p.out_attempts += 1
        p.out_next = now + self._retry_delay(p.out_attempts)
        if send:
            for addr in self._handshake_targets(p):
                self._send_init(p, addr, now)

    def _handshake_targets(self, p: _Peer) -> list[Addr]:
        if p.current is not None and p.addr is not None:
            return [p.addr]  # rekey over the working path
        if p.paths is None:
            return [p.addr] if p.addr is not None else []
        # relays too: the agent offers one only once it is registered (relay-first start)
        return [c.addr for c in sorted(p.paths.candidates(), key=lambda c: c.kind)]

    def punch_message(self, peer: str, addr: PathAddr, now: float) -> bytes | None:
        """What a punch probe to `addr` carries (enclave.agent.birthday_io sends it itself): our
        INIT before a session, else an authenticated PROBE whose reply confirms `addr`."""
        p = self._peers.get(peer)
        if p is None or p.paths is None:
            return None
        if p.current is None:
            return None if p.outbound is None else p.outbound.message(p.cookies.get(addr, now))
        probe_id = p.paths.new_probe(addr, now)
        return self._seal_control(p, p.current, Control(CTRL_PROBE, probe_id), now)

    def _probe(self, p: _Peer, addr: PathAddr, now: float) -> None:
        if p.current is not None and addr == p.addr:
            return
        if p.current is None and p.outbound is not None:
            p.out_sent_to.add(addr)  # a cookie reply is taken from where our INIT went
        msg = self.punch_message(p.name, addr, now)
        if msg is not None:
            self._send(msg, addr)

    # ------------------------------------------------------------------ output
    def _send(self, data: bytes, addr: Addr) -> None:
        self._out.append((data, addr))

    def _send_init(self, p: _Peer, addr: Addr, now: float) -> None:
        """Our INIT to `addr`, with MAC2 when we hold the peer's cookie for that address."""
        if p.outbound is not None:
            p.out_sent_to.add(addr)
            self._send(p.outbound.message(p.cookies.get(addr, now)), addr)

    def _send_to_peer(self, p: _Peer, data: bytes, addr: Addr, now: float) -> None:
        p.last_tx = now
        p.keepalive_after = self._rng.uniform(T.KEEPALIVE_MIN, T.KEEPALIVE_MAX)
        self._send(data, addr)

    def _seal_control(self, p: _Peer, ks: Keyset, ctl: Control, now: float) -> bytes | None:
        try:
            return ks.seal_control(ctl.encode(), now)
        except KeyLimit:
            return None

    def _send_control(self, p: _Peer, ctl: Control, now: float) -> None:
        if p.current is None or p.addr is None:
            return
        msg = self._seal_control(p, p.current, ctl, now)
        if msg is not None:
            self._send_to_peer(p, msg, p.addr, now)
