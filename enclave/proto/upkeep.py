"""Per-peer upkeep the Node schedules beside handshakes, keepalives and path probes — sans-I/O.

    Node event                        Upkeep                            due(now) -> action
    ----------                        ------                            ------------------
    session up (first time)   ---->   rtt probe at once, then every      Probe(peer)
    or moved to another path          RTT_PROBE_INTERVAL (+-10% jitter)
    relay candidate offered   ---->   re-offer it every                  Nudge(peer, candidate)
                                      RELAY_NUDGE_INTERVAL, RELAY_NUDGES
                                      times, until a session is up
    session lost (dead peer,  ---->   connect again after                Reconnect(peer, ...)
    remote close, keys expired)       RECONNECT_DELAY
    closed locally / connect  ---->   forget / cancel the reconnect

PathWatch (one per session, held by the peer row) watches the current path:

    sent since we last heard, and nothing authentic    check(now, path_rx, last_tx) -> PROBE:
    heard over the path for PATH_SUSPECT_AFTER s        an authenticated PROBE on the path
    still nothing, PATH_PROBES probes PATH_PROBE_INTERVAL
    apart                                               -> DEAD (once): the session fails over
    anything authentic heard over it (path_rx moves)    -> back to watching

path_rx is the peer row's "last heard over the current path" (PeerState.heard): what the peer
sends over another path (say its probes over a relay it moved to) does not keep the watch of a
dead path quiet, else two peers' timers could keep one side on a path that carries nothing.

The Node turns the actions into packets (Node.ping, the relay INIT, Node.connect); the I/O
shell only sleeps until Node.get_timer(), which includes deadline() here.  The intervals are
in proto/timing.py.  Bounded: at most one entry of each kind per peer the Node knows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from enclave.discovery.candidates import Candidate
from enclave.proto.timing import (
    PATH_PROBE_INTERVAL,
    PATH_PROBES,
    PATH_SUSPECT_AFTER,
    RECONNECT_DELAY,
    RELAY_NUDGE_INTERVAL,
    RELAY_NUDGES,
    RTT_PROBE_INTERVAL,
)


@dataclass(frozen=True)
class Probe:
    peer: str


@dataclass(frozen=True)
class Nudge:
    peer: str
    candidate: Candidate


@dataclass(frozen=True)
class Reconnect:
    peer: str
    candidates: tuple[Candidate, ...]
    peer_key: bytes


Action = Probe | Nudge | Reconnect


@dataclass
class _Nudging:
    at: float
    left: int
    candidate: Candidate


@dataclass
class _Reconnecting:
    at: float
    candidates: tuple[Candidate, ...]
    peer_key: bytes


class Upkeep:
    """`jitter()` scales each rtt-probe interval (the Node draws it from its rng, so peers'
    probes do not stay in step); 1.0 keeps them exactly RTT_PROBE_INTERVAL apart."""

    def __init__(self, jitter: Callable[[], float] = lambda: 1.0) -> None:
        self._jitter = jitter
        self._probe: dict[str, float] = {}
        self._nudge: dict[str, _Nudging] = {}
        self._reconnect: dict[str, _Reconnecting] = {}

    def session_up(self, peer: str, now: float) -> None:
        """A first session with `peer`: measure rtt now and every RTT_PROBE_INTERVAL; stop
        re-offering the relay; no reconnect is pending any more."""
        self._probe[peer] = now
        self._nudge.pop(peer, None)
        self._reconnect.pop(peer, None)

    def path_moved(self, peer: str, now: float) -> None:
        """The session moved to another path: its rtt probe is due now."""
        if peer in self._probe:
            self._probe[peer] = now

    def relay_offered(self, peer: str, candidate: Candidate, now: float) -> None:
        self._nudge[peer] = _Nudging(now + RELAY_NUDGE_INTERVAL, RELAY_NUDGES, candidate)

    def stop_nudging(self, peer: str) -> None:
        self._nudge.pop(peer, None)

    def session_lost(self, peer: str, now: float, *, reconnect: tuple[Candidate, ...] | None,
                     peer_key: bytes | None) -> None:
        """The session ended; connect again after RECONNECT_DELAY when `reconnect` (the
        candidates to use) and the peer's key are given."""
        self._probe.pop(peer, None)
        self._nudge.pop(peer, None)
        if reconnect is not None and peer_key is not None:
            self._reconnect[peer] = _Reconnecting(now + RECONNECT_DELAY, reconnect, peer_key)
        else:
            self._reconnect.pop(peer, None)

    def cancel_reconnect(self, peer: str) -> None:
        self._reconnect.pop(peer, None)

    def forget(self, peer: str) -> None:
        self._probe.pop(peer, None)
        self._nudge.pop(peer, None)
        self._reconnect.pop(peer, None)

    def deadline(self) -> float | None:
        times = [*self._probe.values(), *(n.at for n in self._nudge.values()),
                 *(r.at for r in self._reconnect.values())]
        return min(times) if times else None

    def due(self, now: float) -> list[Action]:
        out: list[Action] = []
        for peer, at in list(self._probe.items()):
            if now >= at:
                self._probe[peer] = now + RTT_PROBE_INTERVAL * self._jitter()
                out.append(Probe(peer))
        for peer, n in list(self._nudge.items()):
            if now >= n.at:
                if n.left <= 0:
                    del self._nudge[peer]
                    continue
                n.left -= 1
                n.at = now + RELAY_NUDGE_INTERVAL
                out.append(Nudge(peer, n.candidate))
        for peer, r in list(self._reconnect.items()):
            if now >= r.at:
                del self._reconnect[peer]
                out.append(Reconnect(peer, r.candidates, r.peer_key))
        return out

    def __len__(self) -> int:
        return len(self._probe) + len(self._nudge) + len(self._reconnect)


PROBE = "probe"  # PathWatch.check: send an authenticated PROBE on the current path
DEAD = "dead"  # PathWatch.check: the current path is dead (said once per silence)


class PathWatch:
    """Liveness of a session's current path, from the peer row's path_rx / last_tx (any
    authenticated packet over the current path, the fast path's reports included).  A silence
    starts when we have sent since we last heard and PATH_SUSPECT_AFTER passed without
    hearing; it is probed PATH_PROBES times PATH_PROBE_INTERVAL apart, then declared dead
    once.  Hearing anything over the path (path_rx moving, the `last_rx` argument) ends the
    silence; `reset()` after the session moved to another path."""

    def __init__(self) -> None:
        self._silence: float | None = None  # the last_rx the current silence started from
        self._sent = 0
        self._next = 0.0
        self._dead = False

    def reset(self) -> None:
        self._silence = None
        self._sent = 0
        self._dead = False

    def _quiet(self, now: float, last_rx: float, last_tx: float) -> bool:
        return last_tx > last_rx and now >= last_rx + PATH_SUSPECT_AFTER

    def check(self, now: float, last_rx: float, last_tx: float) -> str | None:
        """PROBE, DEAD or None (nothing to do now)."""
        if self._silence is not None and self._silence != last_rx:
            self.reset()  # heard since the silence began
        if self._silence is None:
            if not self._quiet(now, last_rx, last_tx):
                return None
            self._silence, self._sent, self._next = last_rx, 0, now
        if self._dead or now < self._next:
            return None
        if self._sent >= PATH_PROBES:
            self._dead = True
            return DEAD
        self._sent += 1
        self._next = now + PATH_PROBE_INTERVAL
        return PROBE

    def deadline(self, last_rx: float, last_tx: float) -> float | None:
        if self._silence is not None and self._silence == last_rx:
            return None if self._dead else self._next
        return last_rx + PATH_SUSPECT_AFTER if last_tx > last_rx else None
