"""Sliding replay window for 64-bit counters: the one home of its size, REPLAY_WINDOW.

The fast path keeps its own C window for DATA (enclave/_fp_replay.pxi, RFC 6479: a ring of 128
64-bit blocks, one block kept free, so (128 - 1) * 64 = 8128 counters); this one guards CONTROL
messages and the Python reference data path.  Both give the same verdict for every counter
(tests/unit/proto/test_replay_parity.py walks the edges on both; a unit test checks that the
compiled REPLAY_WINDOW equals this one).

Usage: `check(counter)` before decrypting (cheap reject), `update(counter)` only after the AEAD
tag verified, so forged packets cannot move the window.

        highest accepted
               v
    ... [ bits: 1 = seen ] ... counter
    <-- REPLAY_WINDOW -->|
    accepted  if  counter < COUNTER_LIMIT  and  not seen  and
                  (counter > highest  or  highest - counter <= REPLAY_WINDOW)
"""

from __future__ import annotations

# counters below the highest that are still accepted: RFC 6479's ring of 128 64-bit blocks with
# one block kept free, (128 - 1) * 64 = 8128, as the compiled window (RW_WINDOW) has it
REPLAY_WINDOW = (128 - 1) * 64
COUNTER_LIMIT = 2**64 - 1  # the first counter never accepted
_MASK = (1 << (REPLAY_WINDOW + 1)) - 1  # the highest and the REPLAY_WINDOW counters below it


class ReplayWindow:
    __slots__ = ("_bits", "_highest")

    def __init__(self) -> None:
        self._highest = -1
        self._bits = 0  # bit i set => counter (highest - i) seen, for i in 0..REPLAY_WINDOW

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
        if offset > REPLAY_WINDOW:
            return False
        return not (self._bits >> offset) & 1

    def update(self, counter: int) -> bool:
        """Record `counter` (after authentication). False if it was a replay / too old."""
        if not self.check(counter):
            return False
        if counter > self._highest:
            shift = counter - self._highest
            if shift > REPLAY_WINDOW:  # a far jump clears the window (never shift by 2**40)
                self._bits = 1
            else:
                self._bits = ((self._bits << shift) | 1) & _MASK
            self._highest = counter
        else:
            self._bits |= 1 << (self._highest - counter)
        return True
