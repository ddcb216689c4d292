"""Logging what strangers send without letting them fill the log.

    shown(value)                      repr() of untrusted data, cut to SHOWN_MAX characters
    RejectionLog(logger).note(key, msg, *args)
                                      at most BURST records per key and GLOBAL_BURST in all per
                                      PERIOD seconds; the rest are counted, and the count is
                                      logged once the window ends and the next one is noted

Keys (a source address, a name) are kept in an LRU bounded by MAX_KEYS, so rotating keys costs
the attacker the global budget, not our memory.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

SHOWN_MAX = 40
PERIOD = 60.0
BURST = 5
GLOBAL_BURST = 50
MAX_KEYS = 1024


def shown(value: object, limit: int = SHOWN_MAX) -> str:
    """repr(value) cut to `limit` characters (with "..." and the full length when cut)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text)} chars)"


@dataclass
class _Window:
    start: float
    logged: int = 0
    suppressed: int = 0


class RejectionLog:
    """Rate-limited records of rejected input (see the module docstring)."""

    def __init__(self, logger: logging.Logger, level: int = logging.INFO, *,
                 period: float = PERIOD, burst: int = BURST, global_burst: int = GLOBAL_BURST,
                 max_keys: int = MAX_KEYS, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._level = level
        self._period = period
        self._burst = burst
        self._global_burst = global_burst
        self._max_keys = max_keys
        self._clock = clock
        self._keys: OrderedDict[Hashable, _Window] = OrderedDict()
        self._all = _Window(clock())
        self.suppressed = 0  # records not written, in total

    def __len__(self) -> int:
        return len(self._keys)

    def note(self, key: Hashable, msg: str, *args: object) -> bool:
        """Log `msg % args` unless `key` (or everyone together) is over budget; True if logged."""
        now = self._clock()
        self._roll(self._all, now, "in all")
        window = self._keys.get(key)
        if window is None:
            window = self._keys[key] = _Window(now)
            while len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
            self._roll(window, now, "like the last")
        if window.logged >= self._burst or self._all.logged >= self._global_burst:
            window.suppressed += 1
            self._all.suppressed += 1
            self.suppressed += 1
            return False
        window.logged += 1
        self._all.logged += 1
        self._log.log(self._level, msg, *args)
        return True

    def _roll(self, window: _Window, now: float, what: str) -> None:
        if now - window.start < self._period:
            return
        if window.suppressed:
            self._log.log(self._level, "%d more rejections %s were not logged (in %.0f s)",
                          window.suppressed, what, now - window.start)
        window.start, window.logged, window.suppressed = now, 0, 0
