# Active queue management: CoDel (RFC 8289) on the data plane's two queues, ECN marking
# (RFC 3168) in place of a drop when the packet allows it. (included by _fastpath.pyx after
# _fp_ident.pxi; _fp_tx.pxi and _fp_rx.pxi call it per dequeued frame, GIL released.)
#
# Where frames wait, and how long they waited (sojourn time):
#
#   outbound: inner TCP -> qdisc (never backlogged) -> tun ring [txqueuelen entries]
#             -> dp-tx read() -> aqm ring (ours) -> seal -> sendmmsg -> UDP socket -> wire
#     The tun ring tail-drops and cannot tell anybody how long a frame sat in it, so the tx
#     loop reads the TAP eagerly (every round drains it into its own ring, up to the ring's
#     byte budget DP_AQM_RING_BYTES) and seals from the ring's head; the backlog therefore
#     stands in our ring, where each entry carries its CLOCK_MONOTONIC enqueue time, and
#     sojourn = now - enqueued at dequeue. The ring is bounded by bytes (4 MiB, ~7 ms at
#     5 Gbit/s), not entries; when it is full the loop stops reading and the tun ring
#     (its txqueuelen, enclave/dataplane/tap.py) is the overflow, tail-dropped.
#     Sparse lane (aqm_enqueue): a frame of <= DP_AQM_SPARSE_FRAME bytes of a flow (IP
#     5-tuple bucket, fp_flow_bucket) that has nothing in the ring is copied into a small
#     FIFO (DP_AQM_SPARSE_SLOTS) that the tx loop serves and sends before the ring, the way
#     fq_codel serves new flows first: a ping, a keystroke, a VoIP or DNS packet, a TCP ACK
#     does not wait behind a bulk flow's backlog nor for the sealing of its batch. A flow
#     with frames in the ring queues behind them (never reordered); a full lane overflows
#     into the ring. Measured on the lab (docs/PERFORMANCE.md): the ring's mean wait under a
#     saturating stream was 0.2-0.9 ms, below CoDel's target, and it was all FIFO delay that
#     interactive packets shared with the bulk flow.
#   inbound:  wire -> UDP socket receive buffer -> recvmmsg -> open -> TAP write
#     The socket buffer is the queue. SO_TIMESTAMPNS gives each datagram (each UDP_GRO run)
#     its kernel arrival time (CLOCK_REALTIME) in a recvmmsg cmsg: sojourn = now - arrival,
#     `now` read per datagram (the time the round spent on the datagrams before it is part of
#     its wait), taken after authentication, so only authentic frames of a peer are marked
#     or dropped.
#
# CoDel per direction (one state each: the tx loop's and the rx loop's), codel_decide is a
# pure function of (state, sojourn, now, queue empty) -> 0 pass / 1 drop-or-mark:
#   - sojourn < target, or the queue ran empty: first_above = 0 (good queue)
#   - above target for a whole interval: enter dropping, drop/mark this packet; the count
#     restarts from the last episode's (count - lastcount) when the previous episode ended
#     less than 16 intervals ago (RFC 8289 5.5: "re-entry" memory)
#   - while dropping: the next drop at drop_next = previous + interval / sqrt(count), so the
#     drop rate rises while the queue stays above target; leaving when sojourn < target
# A "drop" of an ECN-capable IPv4 / IPv6 packet (ECT(0), ECT(1) or already CE) sets CE and
# sends it on (IPv4 header checksum patched incrementally, RFC 1624); any other frame (not IP,
# Not-ECT) is dropped. Head drop: the decision is taken on the oldest frame, at dequeue.
# A TSO super-frame is one entry: marking it marks all its segments (the kernel copies the
# IP header into each); dropping it drops them all, as the tun ring's tail drop did.
#
# Target and interval (DP_AQM_TARGET_NS, DP_AQM_INTERVAL_NS): 2 ms and 100 ms. 100 ms is the
# RFC's interval (it covers the RTTs of LAN/metro overlays, 0.2-20 ms); 2 ms is below the RFC's
# 5 ms because the overlay's own RTT is far below the Internet's it was tuned for, and above
# one 64 KB super-frame's service time at >= 0.5 Gbit/s (1 ms), so a super-frame in service is
# never a standing queue. 0.5 and 1 ms were tried and did not lower the RTT under load on the
# 2-core lab machine (docs/PERFORMANCE.md, "Latency under load: the AQM");
# ENCLAVE_AQM_TARGET_US / ENCLAVE_AQM_INTERVAL_US override them for measuring other links.
# Counters (global_counters): tx/rx_aqm_marks, tx/rx_aqm_drops (aqm_marks / aqm_drops: the
# sums); tx_aqm_wait_us (summed ring waits; / tap_reads = mean) and rx_aqm_wait_us /
# rx_aqm_timed (mean receive-queue wait): how long frames stood in the queues CoDel manages.

from libc.math cimport sqrt

cdef extern from *:
    """
    #include <time.h>
    static inline uint64_t dp_now_ns(void) {
        struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    static inline uint64_t dp_realtime_ns(void) {
        struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    """
    uint64_t dp_now_ns() noexcept nogil
    uint64_t dp_realtime_ns() noexcept nogil

cdef enum:
    DP_AQM_RING_BYTES = 4 << 20      # the tx ring's byte budget (plus one read's room)
    DP_AQM_RING_ENTRIES = 4096       # entry slots (>= bytes / smallest useful frame is not
                                     # needed: a full entry table also stops the reads)
    DP_AQM_BUDGET = 64               # frames sealed per round before reading the TAP again
    DP_AQM_SPARSE_FRAME = 512        # sparse lane: frames up to this size (Ethernet bytes) ...
    DP_AQM_SPARSE_SLOTS = 256        # ... of a flow with nothing in the ring, this many at most
    DP_AQM_SPARSE_SLOT = 640         # one slot: vnet header + frame, rounded up
    DP_AQM_FLOWS = 1024              # flow buckets counting what each flow has in the ring

cdef uint64_t DP_AQM_TARGET_NS = 2000000
cdef uint64_t DP_AQM_INTERVAL_NS = 100000000

ctypedef struct codel_state:
    uint64_t target             # ns
    uint64_t interval           # ns
    uint64_t first_above        # 0: sojourn not above target (or queue emptied)
    uint64_t drop_next          # ns: next drop while dropping
    uint32_t count              # drops in this dropping episode
    uint32_t lastcount          # count when the last episode began
    int dropping


cdef inline void codel_init(codel_state *c, uint64_t target, uint64_t interval) noexcept nogil:
    memset(c, 0, sizeof(codel_state))
    c.target = target
    c.interval = interval


cdef inline uint64_t codel_control_law(const codel_state *c, uint64_t t) noexcept nogil:
    return t + <uint64_t>(<double>c.interval / sqrt(<double>(c.count if c.count else 1)))


cdef int codel_decide(codel_state *c, uint64_t sojourn, uint64_t now, bint empty) noexcept nogil:
    """RFC 8289 dequeue decision for one packet: 1 drop (or mark), 0 send."""
    cdef bint ok = 0
    cdef uint32_t delta
    if sojourn < c.target or empty:
        c.first_above = 0
    elif c.first_above == 0:
        c.first_above = now + c.interval
    elif now >= c.first_above:
        ok = 1
    if c.dropping:
        if not ok:
            c.dropping = 0
            return 0
        if now >= c.drop_next:
            c.count += 1
            c.drop_next = codel_control_law(c, c.drop_next)
            return 1
        return 0
    if not ok:
        return 0
    c.dropping = 1
    delta = c.count - c.lastcount
    if delta > 1 and now - c.drop_next < 16 * c.interval:
        c.count = delta
    else:
        c.count = 1
    c.lastcount = c.count
    c.drop_next = codel_control_law(c, now)
    return 1


cdef int fp_ecn_mark(uint8_t *f, size_t n) noexcept nogil:
    """Set CE on an ECN-capable IPv4/IPv6 packet in an Ethernet frame (VLAN tags skipped).
    1: marked (or was CE already), 0: not ECN-capable / not IP / too short (drop it)."""
    cdef size_t off = 12
    cdef uint32_t et, w0, w1, s
    cdef uint8_t *ip
    while True:
        if n < off + 2:
            return 0
        et = (<uint32_t>f[off] << 8) | f[off + 1]
        if et == 0x8100 or et == FP_ETH_QINQ or et == FP_ETH_QINQ_OLD:
            off += 4
            continue
        break
    off += 2
    ip = f + off
    if et == 0x0800:
        if n < off + 20 or (ip[0] >> 4) != 4:
            return 0
        if (ip[1] & 3) == 0:
            return 0
        if (ip[1] & 3) == 3:
            return 1
        w0 = (<uint32_t>ip[0] << 8) | ip[1]
        w1 = w0 | 3
        s = (~((<uint32_t>ip[10] << 8) | ip[11]) & 0xFFFF) + (~w0 & 0xFFFF) + w1
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        s = ~s & 0xFFFF
        ip[1] |= 3
        ip[10] = <uint8_t>(s >> 8)
        ip[11] = <uint8_t>(s & 0xFF)
        return 1
    if et == 0x86DD:
        if n < off + 40 or (ip[0] >> 4) != 6:
            return 0
        if (ip[1] & 0x30) == 0:
            return 0
        ip[1] |= 0x30
        return 1
    return 0


# --- the tx ring: TAP reads wait here, each with its enqueue time ----------------------------

ctypedef struct aqm_entry:
    uint32_t off
    uint32_t len
    uint64_t t                  # CLOCK_MONOTONIC ns at enqueue
    uint32_t flow               # its flow bucket (fp_flow_bucket)

ctypedef struct aqm_sparse:
    uint32_t len
    uint64_t t
    uint8_t data[DP_AQM_SPARSE_SLOT]

ctypedef struct aqm_ring:
    uint8_t *buf                # DP_AQM_RING_BYTES + DP_RBUF
    aqm_entry e[DP_AQM_RING_ENTRIES]
    uint32_t head               # oldest entry
    uint32_t n                  # entries queued
    uint32_t wpos               # where the next read lands
    uint64_t bytes
    uint16_t flows[DP_AQM_FLOWS]     # entries queued per flow bucket (in the byte ring)
    aqm_sparse sp[DP_AQM_SPARSE_SLOTS]   # the sparse lane: FIFO, served before the ring
    uint32_t sp_head
    uint32_t sp_n


cdef inline uint8_t *aqm_ring_room(aqm_ring *q) noexcept nogil:
    """Where one more TAP read (<= DP_RBUF bytes) may land, or NULL when the ring is full."""
    cdef uint32_t hoff
    if q.n == 0:
        q.wpos = 0
        return q.buf
    if q.n >= DP_AQM_RING_ENTRIES:
        return NULL
    hoff = q.e[q.head].off
    if q.wpos > hoff:                     # free: [wpos, end) and [0, hoff)
        if q.wpos <= DP_AQM_RING_BYTES:
            return q.buf + q.wpos
        if hoff >= DP_RBUF:
            q.wpos = 0
            return q.buf
        return NULL
    if q.wpos + DP_RBUF <= hoff:          # wrapped: free is [wpos, hoff)
        return q.buf + q.wpos
    return NULL


cdef inline void aqm_ring_push(aqm_ring *q, uint32_t length, uint64_t t) noexcept nogil:
    cdef aqm_entry *x = &q.e[(q.head + q.n) % DP_AQM_RING_ENTRIES]
    x.off = q.wpos
    x.len = length
    x.t = t
    q.n += 1
    q.bytes += length
    q.wpos = (q.wpos + length + 63) & ~(<uint32_t>63)


cdef inline aqm_entry *aqm_ring_pop(aqm_ring *q) noexcept nogil:
    cdef aqm_entry *x = &q.e[q.head]
    q.head = (q.head + 1) % DP_AQM_RING_ENTRIES
    q.n -= 1
    q.bytes -= x.len
    if q.flows[x.flow]:
        q.flows[x.flow] -= 1
    return x


cdef inline uint32_t fp_flow_bucket(const uint8_t *f, size_t n) noexcept nogil:
    """A frame's flow bucket (0..DP_AQM_FLOWS-1): IPv4 / IPv6 addresses, protocol and, for
    TCP / UDP / SCTP (not a later fragment), the ports; other frames by EtherType. FNV-1a."""
    cdef size_t off = 12, l3, a, k, alen
    cdef uint32_t et, h = 2166136261u
    cdef uint8_t proto
    cdef bint ports = 0
    while True:
        if n < off + 2:
            return 0
        et = (<uint32_t>f[off] << 8) | f[off + 1]
        if et == 0x8100 or et == FP_ETH_QINQ or et == FP_ETH_QINQ_OLD:
            off += 4
            continue
        break
    l3 = off + 2
    if et == 0x0800 and n >= l3 + 20 and (f[l3] >> 4) == 4:
        proto = f[l3 + 9]
        a = l3 + 12
        alen = 8
        ports = (((<uint32_t>f[l3 + 6] << 8) | f[l3 + 7]) & 0x1FFF) == 0   # not a later fragment
        l3 += <size_t>(f[l3] & 0x0F) * 4
    elif et == 0x86DD and n >= l3 + 40 and (f[l3] >> 4) == 6:
        proto = f[l3 + 6]
        a = l3 + 8
        alen = 32
        ports = 1
        l3 += 40
    else:
        h = (h ^ (et & 0xFF)) * 16777619u
        h = (h ^ (et >> 8)) * 16777619u
        return h % DP_AQM_FLOWS
    h = (h ^ proto) * 16777619u
    for k in range(alen):
        h = (h ^ f[a + k]) * 16777619u
    if ports and (proto == 6 or proto == 17 or proto == 132) and n >= l3 + 4:
        for k in range(4):
            h = (h ^ f[l3 + k]) * 16777619u
    return h % DP_AQM_FLOWS


cdef inline void aqm_enqueue(aqm_ring *q, uint8_t *room, uint32_t length, size_t vh,
                             uint64_t t) noexcept nogil:
    """A TAP read that landed at `room` (aqm_ring_room): a small frame of a flow with nothing
    in the byte ring goes to the sparse lane (copied; served first, like fq_codel's new
    flows, so an interactive packet does not wait behind a bulk flow's backlog, and no flow
    is reordered: a flow with frames in the ring queues behind them); the rest to the ring."""
    cdef uint32_t b = 0
    cdef aqm_sparse *x
    if length > vh:
        b = fp_flow_bucket(room + vh, length - vh)
    if (length > vh and length - vh <= DP_AQM_SPARSE_FRAME and length <= DP_AQM_SPARSE_SLOT
            and q.flows[b] == 0 and q.sp_n < DP_AQM_SPARSE_SLOTS):
        x = &q.sp[(q.sp_head + q.sp_n) % DP_AQM_SPARSE_SLOTS]
        memcpy(x.data, room, length)
        x.len = length
        x.t = t
        q.sp_n += 1
        return
    aqm_ring_push(q, length, t)
    q.e[(q.head + q.n - 1) % DP_AQM_RING_ENTRIES].flow = b
    if q.flows[b] < 0xFFFF:
        q.flows[b] += 1


cdef inline aqm_sparse *aqm_sparse_pop(aqm_ring *q) noexcept nogil:
    cdef aqm_sparse *x = &q.sp[q.sp_head]
    q.sp_head = (q.sp_head + 1) % DP_AQM_SPARSE_SLOTS
    q.sp_n -= 1
    return x


# --- test entry points ---------------------------------------------------------------------

AQM_TARGET_NS: int = DP_AQM_TARGET_NS
AQM_INTERVAL_NS: int = DP_AQM_INTERVAL_NS
AQM_RING_BYTES: int = DP_AQM_RING_BYTES


@cython.final
cdef class CoDel:
    """The data plane's CoDel state machine (codel_decide) with the clock given by the caller:
    for tests. step(sojourn_ns, now_ns) -> True when this packet is to be dropped / marked."""

    cdef codel_state c

    def __cinit__(self, uint64_t target_ns=DP_AQM_TARGET_NS,
                  uint64_t interval_ns=DP_AQM_INTERVAL_NS):
        if target_ns == 0 or interval_ns == 0:
            raise ValueError("target and interval must be > 0")
        codel_init(&self.c, target_ns, interval_ns)

    def step(self, uint64_t sojourn_ns, uint64_t now_ns, bint empty=False) -> bool:
        return codel_decide(&self.c, sojourn_ns, now_ns, empty) == 1

    @property
    def dropping(self) -> bool:
        return bool(self.c.dropping)

    @property
    def count(self) -> int:
        return self.c.count

    @property
    def drop_next(self) -> int:
        return self.c.drop_next


def ecn_mark(uint8_t[::1] frame not None) -> bool:
    """fp_ecn_mark on an Ethernet frame in place: True if it now carries CE (send it),
    False if it is not ECN-capable IP (the data plane drops it)."""
    if frame.shape[0] == 0:
        return False
    return fp_ecn_mark(&frame[0], <size_t>frame.shape[0]) == 1


AQM_SPARSE_FRAME: int = DP_AQM_SPARSE_FRAME
AQM_SPARSE_SLOTS: int = DP_AQM_SPARSE_SLOTS


@cython.final
cdef class AqmQueue:
    """The tx loop's queue (byte ring + sparse lane, aqm_enqueue) without a TAP: for tests.
    push(frame, t_ns) queues an Ethernet frame (False: the ring is full); pop() returns
    (frame, t_ns, sparse) in the order dp_tx_aqm_round serves them (the sparse lane first,
    then the ring's head), or None when both are empty."""

    cdef aqm_ring *q

    def __cinit__(self):
        self.q = <aqm_ring *>calloc(1, sizeof(aqm_ring))
        if self.q == NULL:
            raise MemoryError()
        self.q.buf = <uint8_t *>malloc(DP_AQM_RING_BYTES + DP_RBUF + 64)
        if self.q.buf == NULL:
            free(self.q)
            self.q = NULL
            raise MemoryError()

    def __dealloc__(self):
        if self.q != NULL:
            free(self.q.buf)
            free(self.q)

    def push(self, const uint8_t[::1] frame not None, uint64_t t_ns) -> bool:
        cdef size_t n = <size_t>frame.shape[0]
        cdef uint8_t *room
        if n == 0 or n > DP_RBUF:
            raise ValueError(f"frame must be 1..{DP_RBUF} bytes")
        room = aqm_ring_room(self.q)
        if room == NULL:
            return False
        memcpy(room, &frame[0], n)
        aqm_enqueue(self.q, room, <uint32_t>n, 0, t_ns)
        return True

    def pop(self) -> tuple[bytes, int, bool] | None:
        cdef aqm_sparse *x
        cdef aqm_entry *e
        if self.q.sp_n > 0:
            x = aqm_sparse_pop(self.q)
            return (x.data[:x.len], x.t, True)
        if self.q.n > 0:
            e = aqm_ring_pop(self.q)
            return (self.q.buf[e.off:e.off + e.len], e.t, False)
        return None

    def __len__(self) -> int:
        return self.q.n + self.q.sp_n


def flow_bucket(const uint8_t[::1] frame not None) -> int:
    """fp_flow_bucket: the flow bucket (0..1023) the tx queue counts an Ethernet frame in."""
    if frame.shape[0] == 0:
        return 0
    return fp_flow_bucket(&frame[0], <size_t>frame.shape[0])
