"""What a responder does with an INIT before its peer table changes (sans-I/O: `now` passed
in, no sockets).  enclave.proto.node hands every INIT datagram to InitIntake.receive and acts on
the Intake it gets back; it answers an INIT afresh only when `Intake.init` is set.

    INIT (type 6) from source S
      1. shape + MAC1 (enclave.proto.admission)          no  -> drop "init_bad_mac1"
      2. the same INIT body as a handshake we answered whose CONFIRM has not come yet (a
         punching initiator sends one INIT on every path; our RESPONSE was lost):
           S plausibly the initiator's (plausible_source)    -> the cached RESPONSE to S again,
                                                    at most MAX_RESPONSE_RESENDS times; no work,
                                                    no new state
           else                                          -> drop "init_resend_foreign"
      3. load, cookies, rate limits (admission.InitGate)     -> COOKIE_REPLY to S and/or a drop
      4. certificate, intent, signature (handshake.validate_init); not our own name
                                                         no  -> drop "init_invalid"
      5. timestamp newer than the last accepted from that name
                                                         no  -> drop "init_replayed"
      6. -> Intake.init: the Node applies the simultaneous-initiation rule, allocates an index,
            sends the RESPONSE, and records the timestamp (accept) only when it answers

Sources of a repeated INIT that get the cached RESPONSE (step 2): whoever replays a captured
INIT within HANDSHAKE_TIMEOUT, before the CONFIRM, would otherwise get those resends wherever
it asks.  A punching initiator legitimately sends the same INIT from several sources: its
private address, its NAT mapping (whose port a symmetric NAT picks per destination, so a
peer-reflexive source is known by its IP only), its IPv6 address, the relay.  So S qualifies
when it is, or for UDP/TCP shares the IP of (admission.source_ip), one of the addresses the
Node knows for the peer: the source of the INIT it answered, the session's current address
(a rekey), and every candidate of the peer's introduction, learnt peer-reflexive path and relay
channel offered since (PathManager.candidates).  A relayed source counts only as that exact
channel (one relay carries every peer's channels).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from enclave.proto import timing as T
from enclave.proto.admission import InitGate, source_ip
from enclave.proto.handshake import (
    Intends,
    LocalCredentials,
    RandomBytes,
    ValidatedInit,
    ValidatePeer,
    validate_init,
)
from enclave.proto.peerstate import PeerState
from enclave.proto.wire import INIT_MACS_SIZE


@dataclass(frozen=True, slots=True)
class Intake:
    """What to do with one INIT datagram: send `reply` (a COOKIE_REPLY or a cached RESPONSE)
    back to its source, count `drop`, answer `init` afresh; any combination, possibly none."""

    reply: bytes | None = None
    drop: str | None = None
    init: ValidatedInit | None = None


NOTHING = Intake()


def plausible_source(p: PeerState, addr: Hashable) -> bool:
    """Whether `addr` may be one of `p`'s own sources (see the module docstring)."""
    known: list[Hashable] = [p.in_addr, p.addr]
    if p.paths is not None:
        known.extend(c.addr for c in p.paths.candidates())
    key = source_ip(addr)
    return any(a is not None and source_ip(a) == key for a in known)


class InitIntake:
    """Steps 1-5 for every INIT; holds the admission gate and the replay table (the newest
    accepted INIT timestamp per name, LRU, INIT_TIMESTAMP_TABLE entries)."""

    def __init__(
        self,
        creds: LocalCredentials,
        validate_peer: ValidatePeer,
        intends: Intends,
        random_bytes: RandomBytes,
    ) -> None:
        self._name = creds.name
        self._validate_peer = validate_peer
        self._intends = intends
        self._gate = InitGate(creds.public_key, random_bytes)  # MAC1, cookies, INIT limits
        self._last_ts: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        """Names whose last accepted INIT timestamp is kept."""
        return len(self._last_ts)

    def receive(
        self, data: bytes, addr: Hashable, now: float, peers: Iterable[PeerState]
    ) -> Intake:
        """An INIT datagram from `addr`; `peers` is the Node's peer table (step 2 looks for a
        pending incoming handshake with the same INIT body, and counts its resends)."""
        if not self._gate.check_mac1(data):
            return Intake(drop="init_bad_mac1")
        raw = data[:-INIT_MACS_SIZE]
        for p in peers:
            if p.inbound is not None and p.inbound.validated.raw == raw:
                return _resend(p, addr)
        verdict = self._gate.admit(data, addr, now)
        if not verdict.admit:
            return Intake(reply=verdict.reply, drop=verdict.drop)
        v = validate_init(data, self._validate_peer, self._intends)
        if v is None or v.peer.name == self._name:
            return Intake(drop="init_invalid")
        last = self._last_ts.get(v.peer.name)
        if last is not None and v.init.timestamp <= last:
            return Intake(drop="init_replayed")  # replayed or stale
        return Intake(init=v)

    def accept(self, v: ValidatedInit) -> None:
        """The Node answers `v`: later INITs from that name must carry a newer timestamp."""
        name = v.peer.name
        self._last_ts[name] = v.init.timestamp
        self._last_ts.move_to_end(name)
        while len(self._last_ts) > T.INIT_TIMESTAMP_TABLE:
            self._last_ts.popitem(last=False)


def _resend(p: PeerState, addr: Hashable) -> Intake:
    assert p.inbound is not None
    if not plausible_source(p, addr):
        return Intake(drop="init_resend_foreign")  # uses up none of the peer's resends
    if p.in_resends >= T.MAX_RESPONSE_RESENDS:
        return NOTHING
    p.in_resends += 1
    return Intake(reply=p.inbound.response_bytes)
