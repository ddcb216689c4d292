"""The hole-punch probe schedule.

Both peers get the same "punch at T" from the platform and start probing each other's
candidates at T, so each side's NAT has an outbound mapping before the other's probes arrive.

    T        T+~150ms   T+~300ms  ...                          T+duration
    |--------|----------|---------- ... --------------------------|
    round 0  round 1    round 2   (interval uniform in [min, max] ms)
    each round: private candidates first, then public UDP, then TCP (rank order)

Rounds stop at T + duration (default 5 s); `PathManager` gives up on direct paths then.
A schedule probes at most MAX_PUNCH_TARGETS candidates (the best ranked), however many a peer
reported: one introduction cannot turn this agent into a flood source.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from enclave.discovery.candidates import Candidate, path_rank

PUNCH_INTERVAL_MIN = 0.100
PUNCH_INTERVAL_MAX = 0.200
PUNCH_DURATION = 5.0
MAX_PUNCH_TARGETS = 16


class PunchSchedule:
    def __init__(
        self,
        candidates: Sequence[Candidate],
        punch_at: float,
        rng: random.Random,
        *,
        duration: float = PUNCH_DURATION,
        interval: tuple[float, float] = (PUNCH_INTERVAL_MIN, PUNCH_INTERVAL_MAX),
    ) -> None:
        # stable sort: keeps the given order within a rank; the best MAX_PUNCH_TARGETS only
        self.candidates = sorted(candidates, key=path_rank)[:MAX_PUNCH_TARGETS]
        self.start = punch_at
        self.end = punch_at + duration
        self._rng = rng
        self._interval = interval
        self._next: float | None = punch_at if self.candidates else None
        self.rounds = 0

    def next_deadline(self) -> float | None:
        return self._next

    def finished(self, now: float) -> bool:
        return self._next is None or now >= self.end

    def due(self, now: float) -> list[Candidate]:
        """Candidates to probe now (one round at most per call, however late we are)."""
        if self._next is None or now < self._next:
            return []
        if now >= self.end:
            self._next = None
            return []
        self.rounds += 1
        nxt = now + self._rng.uniform(*self._interval)
        self._next = nxt if nxt < self.end else None
        return list(self.candidates)
