"""Path choice for one peer: what to probe when, which confirmed path is best, when to give up.

    candidates --> PunchSchedule --> due(now): addresses to probe
                                           |
    authenticated reply from addr ------> confirm(addr) --> best(): lowest rank confirmed path
                                           |
    T + give_up with no direct path confirmed --> relay_due(now) is True once ("the punch
    failed"; a relay may already carry the session: relays are offered from the start)
    while the best confirmed rank is worse than the best candidate rank, a new punch burst
    starts every `reprobe_interval` seconds, so a better path is found and used later.
    While the best path is relayed (or there is none), shorter bursts (RELAYED_REPROBE_DURATION)
    come sooner: after RELAYED_REPROBE_MIN seconds, doubling up to RELAYED_REPROBE_MAX (leaving
    the relay within about RELAYED_REPROBE_MAX + a round trip once a direct path opens, UDP
    candidates ranking before TCP ones); the back-off starts over whenever a direct path is
    confirmed or lost.
    path_failed(addr) (the session's path stopped answering) --> every confirmation is
    forgotten (each path must answer afresh: replies to probes sent before are not taken), a
    punch burst over the direct candidates starts at once, and the relay candidates (also
    ones added later) are probed every FALLBACK_PROBE_INTERVAL for FALLBACK_DURATION or until
    some path is confirmed.
    peer_left(addr, to) (the peer roamed the session from addr to to, say onto a relay because
    our shared direct path died) --> addr and every path ranking better than to must answer
    afresh before the session goes back to them.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from enclave.discovery.candidates import (
    RANK_RELAY,
    RANK_RELAY_TLS,
    Candidate,
    CandidateKind,
    NatBehaviour,
    PathAddr,
    PathChoice,
    choose_path,
    path_rank,
    punchable,
    worth_moving,
)
from enclave.discovery.punch import PUNCH_DURATION, PunchSchedule

GIVE_UP_AFTER = 5.0
REPROBE_INTERVAL = 30.0
REPROBE_DURATION = 2.0
RELAYED_REPROBE_MIN = 0.5  # first re-probe burst after this while relayed; doubles each time
RELAYED_REPROBE_MAX = 2.0  # ... up to this (the relay -> direct move time once a path opens)
RELAYED_REPROBE_DURATION = 0.6  # a re-probe burst while relayed (3-6 rounds)
FALLBACK_PROBE_INTERVAL = 0.25  # relay candidates probed this often after path_failed ...
FALLBACK_DURATION = 10.0  # ... for at most this long
MAX_OUTSTANDING_PROBES = 256


@dataclass
class _PathState:
    candidate: Candidate
    rank: int
    confirmed_at: float | None = None
    rtt: float | None = None


class PathManager:
    def __init__(
        self,
        candidates: Sequence[Candidate],
        punch_at: float,
        rng: random.Random,
        *,
        local_nat: NatBehaviour = NatBehaviour.UNKNOWN,
        give_up_after: float = GIVE_UP_AFTER,
        reprobe_interval: float = REPROBE_INTERVAL,
    ) -> None:
        self._rng = rng
        self._local_nat = local_nat
        self._paths: dict[PathAddr, _PathState] = {}
        for c in candidates:
            self._paths.setdefault(c.addr, _PathState(c, path_rank(c)))
        self._reprobe_interval = reprobe_interval
        self._give_up_at: float | None = punch_at + give_up_after
        self._relay_reported = False
        self._schedule = PunchSchedule(
            self._punch_targets(), punch_at, rng, duration=PUNCH_DURATION
        )
        self._next_reprobe: float | None = None
        self._relayed_wait = RELAYED_REPROBE_MIN  # the next back-off while relayed
        self._fallback_next: float | None = None  # path_failed: next relay probe round
        self._fallback_until = 0.0
        self._probes: dict[int, tuple[PathAddr, float]] = {}

    # --- queries ---------------------------------------------------------------------------
    def candidates(self) -> list[Candidate]:
        return [p.candidate for p in self._paths.values()]

    def rank_of(self, addr: PathAddr) -> int | None:
        state = self._paths.get(addr)
        return None if state is None else state.rank

    def rtt_of(self, addr: PathAddr) -> float | None:
        """Smoothed round-trip time of an authenticated probe over `addr` (seconds)."""
        state = self._paths.get(addr)
        return None if state is None else state.rtt

    def worth_moving(self, cur: Hashable | None, best: PathAddr) -> bool:
        """Whether `best` replaces the session's current path `cur` of the same rank
        (candidates.worth_moving); an unconfirmed current path is left only by a failure."""
        if not isinstance(cur, PathAddr):
            return False
        c, b = self._paths.get(cur), self._paths.get(best)
        if c is None or c.confirmed_at is None or b is None or b.confirmed_at is None:
            return False
        return worth_moving(PathChoice(cur, c.rank, c.rtt, c.confirmed_at),
                            PathChoice(best, b.rank, b.rtt, b.confirmed_at))

    def confirmed(self) -> list[PathAddr]:
        return [a for a, p in self._paths.items() if p.confirmed_at is not None]

    def best(self) -> PathAddr | None:
        """The best confirmed path (candidates.choose_path: lowest rank, then lowest RTT with
        slack, IPv6 before IPv4 among equals, then earliest confirmed)."""
        return choose_path([PathChoice(a, p.rank, p.rtt, p.confirmed_at)
                            for a, p in self._paths.items() if p.confirmed_at is not None])

    def relay_candidates(self) -> list[PathAddr]:
        return [a for a, p in self._paths.items() if p.rank >= RANK_RELAY]

    def _punch_targets(self, better_than: int | None = None) -> list[Candidate]:
        out = []
        for p in self._paths.values():
            if not punchable(p.candidate, self._local_nat):
                continue
            if better_than is not None and p.rank >= better_than:
                continue
            out.append(p.candidate)
        return out

    # --- inputs ----------------------------------------------------------------------------
    def learn(self, addr: PathAddr) -> None:
        """An authenticated packet came from an address we did not know (peer-reflexive)."""
        if addr not in self._paths:
            cand = Candidate(addr, CandidateKind.PEER_REFLEXIVE)
            self._paths[addr] = _PathState(cand, path_rank(cand))

    def add_candidate(self, candidate: Candidate) -> None:
        if candidate.addr not in self._paths:
            self._paths[candidate.addr] = _PathState(candidate, path_rank(candidate))

    def confirm(self, addr: PathAddr, now: float, rtt: float | None = None) -> None:
        self.learn(addr)
        state = self._paths[addr]
        if state.rank < RANK_RELAY:
            if state.confirmed_at is None:
                self._relayed_wait = RELAYED_REPROBE_MIN  # a direct path: quick if it dies
            self._give_up_at = None  # the punch worked (a relay path does not count)
        state.confirmed_at = now
        if rtt is not None:
            state.rtt = rtt if state.rtt is None else 0.75 * state.rtt + 0.25 * rtt

    def unconfirm(self, addr: PathAddr) -> None:
        state = self._paths.get(addr)
        if state is not None:
            state.confirmed_at = None
            if state.rank < RANK_RELAY:
                self._relayed_wait = RELAYED_REPROBE_MIN
                if self._best_rank() >= RANK_RELAY and self._next_reprobe is not None:
                    self._next_reprobe = None  # fell back to a relay: re-armed at once below

    def peer_left(self, addr: PathAddr, to: PathAddr) -> None:
        """The peer moved the session from `addr` to `to` (its newest authentic packet came
        from there): `addr` and every path ranking better than `to` must answer afresh (replies
        to earlier probes of them are not taken) before the session goes back to one; a peer
        that moved to the relay found them dead, and a path confirmed before says nothing."""
        self.learn(to)
        rank = self._paths[to].rank
        left = {a for a, p in self._paths.items() if a == addr or (a != to and p.rank < rank)}
        for a in left:
            self.unconfirm(a)
        self._probes = {i: sent for i, sent in self._probes.items() if sent[0] not in left}

    def path_failed(self, addr: PathAddr, now: float) -> None:
        """The session's path `addr` stopped answering: forget every confirmation (each path
        must answer afresh: replies to probes sent before are not taken), punch the direct
        candidates again now and probe the relays every FALLBACK_PROBE_INTERVAL until one
        answers or FALLBACK_DURATION passed."""
        self.learn(addr)
        self._probes.clear()
        for state in self._paths.values():
            state.confirmed_at = None
        self._relayed_wait = RELAYED_REPROBE_MIN
        self._next_reprobe = None
        self._schedule = PunchSchedule(self._punch_targets(), now, self._rng,
                                       duration=RELAYED_REPROBE_DURATION)
        self._fallback_next, self._fallback_until = now, now + FALLBACK_DURATION

    def new_probe(self, addr: PathAddr, now: float) -> int:
        """An id for an authenticated probe to `addr`; the reply must echo it."""
        if len(self._probes) >= MAX_OUTSTANDING_PROBES:
            oldest = min(self._probes, key=lambda k: self._probes[k][1])
            del self._probes[oldest]
        probe_id = self._rng.getrandbits(64)
        self._probes[probe_id] = (addr, now)
        return probe_id

    def probe_reply(self, probe_id: int, addr: PathAddr, now: float) -> bool:
        """A reply to one of our probes arrived (authenticated) from `addr`: confirm the path."""
        sent = self._probes.pop(probe_id, None)
        if sent is None:
            return False
        self.confirm(addr, now, rtt=max(0.0, now - sent[1]))
        return True

    # --- timers ----------------------------------------------------------------------------
    def due(self, now: float) -> list[PathAddr]:
        """Addresses to probe now (punch rounds, and later re-probe bursts for better paths)."""
        if self._next_reprobe is not None and now >= self._next_reprobe:
            self._next_reprobe = None
            if self._better_possible():
                current = self._best_rank()
                self._schedule = PunchSchedule(
                    self._punch_targets(better_than=current),
                    now,
                    self._rng,
                    duration=REPROBE_DURATION if current < RANK_RELAY
                    else RELAYED_REPROBE_DURATION,
                )
        out = [c.addr for c in self._schedule.due(now)]
        if self._fallback_next is not None and now >= self._fallback_next:
            if now >= self._fallback_until or self.best() is not None:
                self._fallback_next = None
            else:
                out += [a for a in self.relay_candidates() if a not in out]
                self._fallback_next = now + FALLBACK_PROBE_INTERVAL
        if self._schedule.next_deadline() is None and self._next_reprobe is None:
            if self._better_possible():
                self._next_reprobe = now + self._reprobe_wait()
        return out

    def relay_due(self, now: float) -> bool:
        """True exactly once: no direct path was confirmed within the give-up time."""
        if self._relay_reported or self._give_up_at is None or now < self._give_up_at:
            return False
        self._relay_reported = True
        return True

    def next_deadline(self) -> float | None:
        times = [
            t
            for t in (
                self._schedule.next_deadline(),
                self._next_reprobe,
                self._fallback_next,
                None if self._relay_reported else self._give_up_at,
            )
            if t is not None
        ]
        return min(times) if times else None

    def _reprobe_wait(self) -> float:
        """Seconds until the next re-probe burst: `reprobe_interval` on a direct path, a
        doubling back-off from RELAYED_REPROBE_MIN up to RELAYED_REPROBE_MAX while relayed or
        unconnected."""
        if self._best_rank() < RANK_RELAY:
            return self._reprobe_interval
        cap = min(self._reprobe_interval, RELAYED_REPROBE_MAX)
        wait = self._relayed_wait
        self._relayed_wait = min(cap, wait * 2)
        return min(wait, cap)

    def _best_rank(self) -> int:
        best = self.best()
        return RANK_RELAY_TLS + 1 if best is None else self._paths[best].rank

    def _better_possible(self) -> bool:
        return bool(self._punch_targets(better_than=self._best_rank()))
