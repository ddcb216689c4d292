"""Token-bucket rate limits against handshake floods (sans-I/O: callers pass `now`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class TokenBucket:
    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp: float | None = None

    def allow(self, now: float, cost: float = 1.0) -> bool:
        if self._stamp is not None and now > self._stamp:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        if self._stamp is None or now > self._stamp:
            self._stamp = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False


class KeyedBuckets:
    """One bucket per key (a source IP, a claimed identity); an LRU of at most `max_keys`.

    A flood from many keys evicts old buckets instead of growing; a global bucket beside it
    caps the total work."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 4096) -> None:
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: Hashable, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self._rate, self._burst)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.allow(now)


class KeyedRateLimiter:
    """One bucket per key (e.g. source address) plus one global bucket; bounded memory."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        global_rate: float,
        global_burst: float,
        max_keys: int = 4096,
    ) -> None:
        self._keyed = KeyedBuckets(rate, burst, max_keys=max_keys)
        self._global = TokenBucket(global_rate, global_burst)

    def __len__(self) -> int:
        return len(self._keyed)

    def allow(self, key: Hashable, now: float) -> bool:
        if not self._keyed.allow(key, now):
            return False
        return self._global.allow(now)
