# L2 switch: MAC address table, learn source -> peer slot, look up destination
# (included by _fastpath.pyx). All functions are nogil and allocation-free after creation.
#
#   inbound  (peer -> TAP):  frame authenticated  ->  mt_learn(src MAC, peer slot, now)
#   outbound (TAP -> peers): mt_lookup(dst MAC, now) ->  slot >= 0 : unicast to that peer
#                                                        MT_FLOOD  : broadcast / multicast /
#                                                                    unknown / expired -> all
#                                                        MT_DROP   : runt (< 14 bytes)
#
# Ethernet header:  0       6       12     14
#                   | dst   | src   | type |
# Group bit: dst[0] & 1 (broadcast ff:ff:ff:ff:ff:ff is a group address too). A frame whose
# source has the group bit set is malformed and is never learned.
#
# Table: open addressing over a power-of-two array; a MAC may live in any of MT_PROBE
# consecutive buckets after its hash (seeded per table), and lookups scan all of them, so empty
# buckets never break a chain and entries can be freed in place. Learning a new MAC takes the
# first empty or expired bucket of its window, else evicts the least recently seen one.
# Size the table at >= 4x the MACs expected (default 4096 buckets for ~1000 MACs): at 25 % load
# nothing is evicted in practice; an evicted MAC only costs flooding until it is learned again.
# Entries older than max_age (same time unit as `now`, e.g. milliseconds) are ignored.
# Only learn from frames that passed AEAD authentication (a peer can't claim another's MAC
# without its key, but a compromised peer could: the table only ever points at real peers).

from libc.stdlib cimport calloc
import os as _os

cdef enum:
    MT_PROBE = 16
    MT_FLOOD = -1
    MT_DROP = -2

ctypedef struct mt_entry:
    uint64_t key          # MAC (48 bits) + 1; 0 = empty
    uint64_t seen         # `now` of the last learn
    int32_t slot

ctypedef struct mt_table:
    mt_entry *entries
    uint64_t mask
    uint64_t seed
    uint64_t max_age


cdef inline uint64_t mt_mac(const uint8_t *p) noexcept nogil:
    return ((<uint64_t>p[0] << 40) | (<uint64_t>p[1] << 32) | (<uint64_t>p[2] << 24)
            | (<uint64_t>p[3] << 16) | (<uint64_t>p[4] << 8) | <uint64_t>p[5])


cdef inline uint64_t mt_hash(const mt_table *t, uint64_t mac) noexcept nogil:
    # seeded 64-bit finaliser (MurmurHash3 fmix64): every input bit affects the bucket
    cdef uint64_t h = mac ^ t.seed
    h ^= h >> 33
    h *= <uint64_t>0xFF51AFD7ED558CCD
    h ^= h >> 33
    h *= <uint64_t>0xC4CEB9FE1A85EC53
    h ^= h >> 33
    return h & t.mask


cdef inline bint mt_live(const mt_table *t, const mt_entry *e, uint64_t now) noexcept nogil:
    return e.key != 0 and (now < e.seen or now - e.seen <= t.max_age)


cdef inline int32_t mt_find(const mt_table *t, uint64_t mac, uint64_t now) noexcept nogil:
    cdef uint64_t h = mt_hash(t, mac)
    cdef uint64_t key = mac + 1
    cdef int i
    cdef const mt_entry *e
    for i in range(MT_PROBE):
        e = &t.entries[(h + i) & t.mask]
        if e.key == key:
            return e.slot if mt_live(t, e, now) else MT_FLOOD
    return MT_FLOOD


cdef inline int32_t mt_lookup(const mt_table *t, const uint8_t *frame, size_t length,
                              uint64_t now) noexcept nogil:
    """Where to send an outbound Ethernet frame: a peer slot, MT_FLOOD or MT_DROP."""
    if length < 14:
        return MT_DROP
    if frame[0] & 1:
        return MT_FLOOD
    return mt_find(t, mt_mac(frame), now)


cdef inline int mt_learn(mt_table *t, const uint8_t *frame, size_t length, int32_t slot,
                         uint64_t now) noexcept nogil:
    """Learn the source MAC of an authenticated inbound frame from peer `slot`.

    Returns 1 if learned/refreshed, 0 if the frame is a runt or its source is a group address.
    """
    cdef uint64_t mac, h, key
    cdef int i
    cdef mt_entry *e
    cdef mt_entry *victim = NULL
    if length < 14 or frame[6] & 1 or slot < 0:
        return 0
    mac = mt_mac(frame + 6)
    key = mac + 1
    h = mt_hash(t, mac)
    for i in range(MT_PROBE):
        e = &t.entries[(h + i) & t.mask]
        if e.key == key:                      # known MAC (maybe moved to another peer)
            victim = e
            break
        if not mt_live(t, e, now):            # empty or expired: first one wins
            if victim == NULL or mt_live(t, victim, now):
                victim = e
        elif victim == NULL or (mt_live(t, victim, now) and e.seen < victim.seen):
            victim = e                        # else the least recently seen live entry
    victim.key = key
    victim.seen = now
    victim.slot = slot
    return 1


cdef inline int mt_forget_slot(mt_table *t, int32_t slot) noexcept nogil:
    """Drop every MAC learned from peer `slot` (peer gone). Returns how many."""
    cdef uint64_t i
    cdef int n = 0
    for i in range(t.mask + 1):
        if t.entries[i].key != 0 and t.entries[i].slot == slot:
            t.entries[i].key = 0
            n += 1
    return n


MAC_FLOOD: int = MT_FLOOD
MAC_DROP: int = MT_DROP


@cython.final
cdef class MacTable:
    """Python wrapper around one mt_table (the data plane uses the C functions directly).

    capacity: buckets (rounded up to a power of two, >= 16). Times are integers in any unit
    (the data plane uses milliseconds); an entry older than max_age is treated as unknown.
    """

    cdef mt_table t

    def __cinit__(self, int capacity=4096, uint64_t max_age=300_000, seed=None):
        cdef uint64_t n = 16
        if capacity < 1 or capacity > (1 << 24):
            raise ValueError("capacity must be between 1 and 2**24")
        while n < <uint64_t>capacity:
            n <<= 1
        self.t.entries = <mt_entry *>calloc(n, sizeof(mt_entry))
        if self.t.entries == NULL:
            raise MemoryError()
        self.t.mask = n - 1
        self.t.max_age = max_age
        if seed is None:
            seed = int.from_bytes(_os.urandom(8), "little")
        self.t.seed = seed

    def __dealloc__(self):
        free(self.t.entries)
        self.t.entries = NULL

    @property
    def capacity(self) -> int:
        return self.t.mask + 1

    def learn(self, const uint8_t[::1] frame not None, int32_t slot, uint64_t now) -> bool:
        """Learn frame's source MAC (bytes 6..11) as reachable via peer `slot`."""
        cdef size_t n = frame.shape[0]
        return mt_learn(&self.t, &frame[0] if n else NULL, n, slot, now) == 1

    def lookup(self, const uint8_t[::1] frame not None, uint64_t now) -> int:
        """Peer slot for frame's destination MAC (bytes 0..5), MAC_FLOOD or MAC_DROP."""
        cdef size_t n = frame.shape[0]
        return mt_lookup(&self.t, &frame[0] if n else NULL, n, now)

    def forget_slot(self, int32_t slot) -> int:
        return mt_forget_slot(&self.t, slot)

    def count(self, uint64_t now) -> int:
        """Live entries at time `now`."""
        cdef uint64_t i
        cdef int n = 0
        for i in range(self.t.mask + 1):
            if mt_live(&self.t, &self.t.entries[i], now):
                n += 1
        return n
