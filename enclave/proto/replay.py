"""Sliding replay window for 64-bit counters (RFC 6479 idea, Python reference version).

The fast path keeps its own C window for DATA; this one guards CONTROL messages and the Python
reference data path.  Usage: `check(counter)` before decrypting (cheap reject), `update(counter)`
only after the AEAD tag verified, so forged packets cannot move the window.

        highest seen
             v
    ... [ window bits: 1 = seen ] ... counter
    <--------- size ---------->
    counters <= highest - size are too old; counters > highest are new.
"""

from __future__ import annotations

REPLAY_WINDOW_SIZE = 8192
COUNTER_LIMIT = 2**64 - 1


class ReplayWindow:
    __slots__ = ("_bits", "_highest", "_size")

    def __init__(self, size: int = REPLAY_WINDOW_SIZE) -> None:
        self._size = size
        self._highest = -1
        self._bits = 0  # bit i set => counter (highest - i) seen

    @property
    def highest(self) -> int:
        return self._highest

    def check(self, counter: int) -> bool:
        """True if `counter` has not been seen and is not too old."""
        if counter < 0 or counter >= COUNTER_LIMIT:
            return False
        if counter > self._highest:
            return True
        offset = self._highest - counter
        if offset >= self._size:
            return False
        return not (self._bits >> offset) & 1

    def update(self, counter: int) -> bool:
        """Record `counter` (after authentication). False if it was a replay / too old."""
        if not self.check(counter):
            return False
        if counter > self._highest:
            shift = counter - self._highest
            if shift >= self._size:  # a far jump clears the window (never shift by 2**40)
                self._bits = 1
            else:
                self._bits = ((self._bits << shift) | 1) & ((1 << self._size) - 1)
            self._highest = counter
        else:
            self._bits |= 1 << (self._highest - counter)
        return True
