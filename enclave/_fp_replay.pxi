# Anti-replay sliding window, RFC 6479 style (included by _fastpath.pyx).
#
# A ring of RW_BLOCKS 64-bit words holds one bit per counter. The window spans the newest
# accepted counter `last` and the RW_WINDOW = (RW_BLOCKS - 1) * 64 = 8128 counters below it.
# Moving forward clears whole words (no bit shifting): at most RW_BLOCKS word writes however
# far the counter jumps.
#
#   counter c  ->  word (c >> 6) & (RW_BLOCKS - 1), bit c & 63
#
#   ring:  [w0][w1] ... [w(k)] ... [w127]        last lives in word k; the words after k
#                         ^ last                 (mod 128) hold the oldest part of the window
#
#   accepted  if  c < limit  and  (c > last  or  (last - c <= RW_WINDOW  and  bit c clear))
#
# Use it in two steps, so that only authenticated frames move the window:
#   1. rw_check(w, c)   before decryption: cheap reject of replays / too-old counters
#   2. open the frame (AEAD); drop it if not authentic
#   3. rw_update(w, c)  after authentication: marks c; returns 0 if c was (meanwhile) seen
#                       or is out of the window, in which case the frame is dropped too.
# Counters start at 0. `limit` bounds usable counters (the session rekeys long before it).

cdef enum:
    RW_BLOCK_BITS_LOG = 6
    RW_BLOCK_BITS = 64
    RW_BLOCKS = 128
    RW_WINDOW = (RW_BLOCKS - 1) * RW_BLOCK_BITS

ctypedef struct rw_window:
    uint64_t last
    uint64_t limit
    uint64_t ring[RW_BLOCKS]


cdef inline void rw_init(rw_window *w, uint64_t limit) noexcept nogil:
    memset(w, 0, sizeof(rw_window))
    w.limit = limit


cdef inline bint rw_check(const rw_window *w, uint64_t c) noexcept nogil:
    """Would counter c be accepted? Does not modify the window."""
    if c >= w.limit:
        return 0
    if c > w.last:
        return 1
    if w.last - c > RW_WINDOW:
        return 0
    return (w.ring[(c >> RW_BLOCK_BITS_LOG) & (RW_BLOCKS - 1)]
            >> (c & (RW_BLOCK_BITS - 1)) & 1) == 0


cdef inline bint rw_update(rw_window *w, uint64_t c) noexcept nogil:
    """Accept counter c of an authenticated frame: 1 if new (now marked), 0 to drop."""
    cdef uint64_t cur, diff, i, old, bit
    cdef uint64_t *word
    if c >= w.limit:
        return 0
    if c > w.last:
        cur = w.last >> RW_BLOCK_BITS_LOG
        diff = (c >> RW_BLOCK_BITS_LOG) - cur
        if diff > RW_BLOCKS:
            diff = RW_BLOCKS
        i = 1
        while i <= diff:
            w.ring[(cur + i) & (RW_BLOCKS - 1)] = 0
            i += 1
        w.last = c
    elif w.last - c > RW_WINDOW:
        return 0
    word = &w.ring[(c >> RW_BLOCK_BITS_LOG) & (RW_BLOCKS - 1)]
    bit = (<uint64_t>1) << (c & (RW_BLOCK_BITS - 1))
    old = word[0]
    word[0] = old | bit
    return (old & bit) == 0


REPLAY_WINDOW: int = RW_WINDOW


@cython.final
cdef class ReplayWindow:
    """Python view of one rw_window, for tests and for the Python control path."""

    cdef rw_window w

    def __cinit__(self, limit: int = 2**64 - 1):
        rw_init(&self.w, limit)

    def check(self, uint64_t counter) -> bool:
        return rw_check(&self.w, counter)

    def update(self, uint64_t counter) -> bool:
        return rw_update(&self.w, counter)

    def reset(self) -> None:
        rw_init(&self.w, self.w.limit)

    @property
    def last(self) -> int:
        return self.w.last
