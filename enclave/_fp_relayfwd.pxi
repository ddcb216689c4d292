# RelayForwarder: the platform relay's DATA forwarding in one native thread (included by
# _fastpath.pyx after _fp_relay.pxi; uses _fp_udp.pxi's recvmmsg/sendmmsg and _fp_epoch.pxi's
# helpers). The registration protocol (tickets, cookies, rate limits of REGISTER, expiry,
# revocation) stays in Python (enclave/platform/relay.py); Python installs a forwarding entry
# only for a live pair whose tickets name each other and removes it as soon as either side
# is no longer (the table is a cache of Python's decision, never an authority of its own).
#
#   relay UDP socket --recvmmsg (64, UDP_GRO)--> thread enclave-relay, for each datagram (a
#   coalesced run -- an agent's UDP GSO send arrives whole -- is taken segment by segment):
#       DATA(ch) (type 35, reserved 0, ch 1..65535, payload > 0)
#           (source address, ch) in the table?   no  -> dropped, counted (drop_unknown)
#           entry expired?                        yes -> dropped, counted (drop_expired)
#           entry's token bucket empty?           yes -> dropped, counted (drop_rate)
#           CoDel (below) says the queue stands?  yes -> dropped, counted (drop_aqm)
#           header's channel := entry's dst channel (in place), queued for entry's dst
#       anything else (REGISTER, header-only DATA, malformed) --> punt bucket empty? yes ->
#           dropped, counted (drop_punt_rate) --> punt socket --> Python
#   queued datagrams --sendmmsg--> (a full socket buffer: wait up to RF_SEND_WAIT_MS, then
#                                  drop, counted as drop_send)
#   a run whose segments all go to one destination leaves as one UDP GSO message (the headers
#   rewritten in place, no copy); a run that splits goes segment by segment, and so does a
#   GSO message the kernel refuses (gso_fallbacks)
#
# CoDel (RFC 8289, _fp_aqm.pxi's codel_decide; one state for the one queue): the relay socket's
# receive buffer is where relayed datagrams wait when the thread is behind (off the CPU on a
# busy host, or slower than its senders), shared by every pair. SO_TIMESTAMPNS gives each
# received buffer (each UDP_GRO run) its kernel arrival time; sojourn = now - arrival, `now`
# read per buffer. CoDel decides per forwarded datagram of more than RF_AQM_SMALL bytes (bulk
# data: a ping, a TCP ACK, a handshake is never dropped here; it gains nothing from a drop and
# is what interactive traffic is made of); "drop" drops it (the relay sees only ciphertext: no
# ECN mark). A TCP sender behind it then slows to keep the queue near the target instead of
# filling the buffer to its tail drop. aqm_target_ns 0: off. The sojourns are counted
# (aqm_timed, aqm_wait_us, aqm_wait_max_us) whether CoDel is on or not.
#
# Punt bucket (punt_rate / punt_burst, one for the socket): what goes to Python (REGISTER from
# anyone, junk) is bounded here, before Python spends anything on it: a flood of REGISTERs from
# spoofed sources costs the thread a classification each, and Python at most punt_rate
# messages a second.
#
# Punt socket (AF_UNIX SOCK_DGRAM socketpair; RelayForwarder.punt_socket is Python's end):
# each message is the data plane's 28-byte punt header (_fp_punt.pxi: kind 1 DATAGRAM,
# family, port BE, address) followed by the datagram as it came.  A full punt socket drops
# (punt_dropped): Python is behind, and REGISTER is retried by its sender.
#
# The table: open addressing (linear probing, backward-shift deletion), capacity a power of
# two >= 2 * max_entries, keyed by (family, port, address, channel) with a random seed; one
# mutex, taken by Python for install/remove and by the thread once per received batch.

cdef extern from *:
    """
    #include <time.h>
    static inline uint64_t rf_now_ns(void) {
        struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    """
    uint64_t rf_now_ns() noexcept nogil

cdef enum:
    RF_SLOT = 65536             # receive room per datagram (the largest UDP payload fits)
    RF_BATCH = UB_MAX           # datagrams per recvmmsg
    RF_HDR = 8                  # wire.RELAY_HEADER_SIZE (checked at import)
    RF_DATA = 35                # wire.MSG_RELAY_DATA (checked at import)
    RF_MAX_CHANNEL = 65535      # wire.RELAY_MAX_CHANNEL (checked at import)
    RF_SEND_WAIT_MS = 20        # how long a full socket buffer is waited for per batch
    RF_SALEN = 28               # sockaddr_in6, the largest destination kept
    RF_SEGS = 64                # segments of one UDP_GRO run (UDP_GRO_CNT_MAX; a GSO run that
                                # arrives whole may have more: rf_take never passes RF_OUT)
    RF_OUT = RF_BATCH * RF_SEGS # datagrams (or GSO runs) queued per round, and punts
    RF_AQM_SMALL = 600          # datagrams up to this size are never dropped by CoDel

    # what rf_classify decided
    RF_FORWARD = 0
    RF_PUNT = 1
    RF_DROP_UNKNOWN = 2
    RF_DROP_EXPIRED = 3
    RF_DROP_RATE = 4
    RF_DROP_AQM = 5

# CoDel at the relay: 1 ms target (one hop of a relayed path; the agents' own queues have 2 ms
# each), the RFC's 100 ms interval; RelayForwarder(aqm_target_ns=..., aqm_interval_ns=...)
RELAY_AQM_TARGET_NS: int = 1000000
RELAY_AQM_INTERVAL_NS: int = 100000000


ctypedef struct rf_entry:
    uint64_t expires_ns
    uint64_t last_ns
    double tokens
    uint64_t forwarded
    uint64_t bytes
    uint32_t channel
    uint32_t dst_channel
    uint8_t family              # 0: empty slot
    uint8_t dstlen
    uint8_t port[2]             # network order, as in the sockaddr
    uint8_t addr[16]
    uint8_t dst[RF_SALEN]       # destination sockaddr (sockaddr_in / sockaddr_in6)


ctypedef struct rf_counters:
    uint64_t datagrams
    uint64_t rounds
    uint64_t forwarded
    uint64_t forwarded_bytes    # payload bytes, without the relay header
    uint64_t punted
    uint64_t punt_dropped
    uint64_t drop_unknown
    uint64_t drop_expired
    uint64_t drop_rate
    uint64_t drop_send
    uint64_t drop_truncated
    uint64_t send_errors
    uint64_t recv_errors
    uint64_t sendmmsg_calls
    uint64_t eagain_waits
    uint64_t gro_runs           # coalesced runs received
    uint64_t gso_sends          # runs sent as one GSO message
    uint64_t gso_fallbacks      # GSO messages the kernel refused, sent segment by segment
    uint64_t drop_aqm           # CoDel drops (the receive queue stood above target)
    uint64_t drop_punt_rate     # punts over the punt bucket, dropped before Python
    uint64_t aqm_timed          # received buffers with a kernel arrival time
    uint64_t aqm_wait_us        # their summed sojourns in the receive queue
    uint64_t aqm_wait_max_us    # the longest of them


ctypedef struct rf_state:
    int udp_fd
    int punt_fd
    int wake_fd
    int gro                     # UDP_GRO is on: a buffer may hold a run of segments
    volatile int stop
    uint64_t seed
    uint32_t mask               # capacity - 1
    uint32_t count
    uint32_t max_entries
    double rate                 # tokens per second per entry
    double burst
    double punt_rate            # punts per second (the punt bucket)
    double punt_burst
    double punt_tokens
    uint64_t punt_last_ns
    int aqm                     # CoDel on the receive queue (SO_TIMESTAMPNS is on)
    codel_state cd
    rf_entry *table
    pthread_mutex_t lock
    rf_counters c
    udp_batch *b
    uint8_t *buf                # RF_BATCH * RF_SLOT
    uint32_t offsets[RF_BATCH]
    uint32_t sizes[RF_BATCH]
    uint32_t lengths[RF_BATCH]
    uint32_t out_off[RF_OUT]
    uint32_t out_len[RF_OUT]
    uint16_t out_gso[RF_OUT]
    sockaddr_storage out_sa[RF_OUT]
    socklen_t out_salen[RF_OUT]
    uint32_t punt_off[RF_OUT]
    uint32_t punt_len[RF_OUT]
    uint8_t punt_src[RF_OUT]    # which received buffer (its source address)


from libc.errno cimport EBADF, ENOTSOCK


# --- table ----------------------------------------------------------------------------------------

cdef inline int rf_key_of(const sockaddr_storage *sa, uint8_t *family, uint8_t *port,
                          uint8_t *addr) noexcept nogil:
    """The table key's address part of a source sockaddr; -1 for a family it cannot hold."""
    cdef const uint8_t *raw = <const uint8_t *>sa
    memset(addr, 0, 16)
    if sa.ss_family == AF_INET:
        family[0] = 4
        memcpy(addr, raw + 4, 4)
    elif sa.ss_family == AF_INET6:
        family[0] = 6
        memcpy(addr, raw + 8, 16)
    else:
        return -1
    port[0] = raw[2]
    port[1] = raw[3]
    return 0


cdef inline uint32_t rf_hash(const rf_state *st, uint8_t family, const uint8_t *port,
                             const uint8_t *addr, uint32_t channel) noexcept nogil:
    cdef uint64_t h = st.seed
    cdef uint64_t w
    cdef int i
    h ^= (<uint64_t>family << 56) | (<uint64_t>port[0] << 40) | (<uint64_t>port[1] << 32) | channel
    for i in range(2):
        memcpy(&w, addr + 8 * i, 8)
        h = (h ^ w) * <uint64_t>0x9E3779B97F4A7C15
        h ^= h >> 29
    h ^= h >> 32
    h *= <uint64_t>0xBF58476D1CE4E5B9
    h ^= h >> 31
    return <uint32_t>h & st.mask


cdef inline bint rf_match(const rf_entry *e, uint8_t family, const uint8_t *port,
                          const uint8_t *addr, uint32_t channel) noexcept nogil:
    return (e.family == family and e.channel == channel and e.port[0] == port[0]
            and e.port[1] == port[1] and memcmp(e.addr, addr, 16) == 0)


cdef rf_entry *rf_find(rf_state *st, uint8_t family, const uint8_t *port, const uint8_t *addr,
                       uint32_t channel) noexcept nogil:
    cdef uint32_t h = rf_hash(st, family, port, addr, channel)
    cdef rf_entry *e
    while True:
        e = &st.table[h]
        if e.family == 0:
            return NULL
        if rf_match(e, family, port, addr, channel):
            return e
        h = (h + 1) & st.mask


cdef void rf_delete(rf_state *st, rf_entry *e) noexcept nogil:
    """Remove e, shifting later members of its probe run back (no tombstones)."""
    cdef uint32_t hole = <uint32_t>(e - st.table)
    cdef uint32_t j = hole
    cdef uint32_t home
    cdef rf_entry *x
    memset(e, 0, sizeof(rf_entry))
    st.count -= 1
    while True:
        j = (j + 1) & st.mask
        x = &st.table[j]
        if x.family == 0:
            return
        home = rf_hash(st, x.family, x.port, x.addr, x.channel)
        # x may move into the hole when its home is not cyclically within (hole, j]
        if ((j - home) & st.mask) >= ((j - hole) & st.mask):
            st.table[hole] = x[0]
            memset(x, 0, sizeof(rf_entry))
            hole = j


# --- one datagram ---------------------------------------------------------------------------------

cdef int rf_classify(rf_state *st, uint8_t *p, uint32_t n, const sockaddr_storage *sa,
                     uint64_t now, sockaddr_storage *out, socklen_t *outlen,
                     rf_entry **hit) noexcept nogil:
    """What to do with datagram p[:n] from sa (the caller holds st.lock). RF_FORWARD: the
    header now names the destination's channel, out/outlen hold where it goes and hit the
    entry (counted as forwarded)."""
    cdef uint32_t ch
    cdef uint8_t family
    cdef uint8_t port[2]
    cdef uint8_t addr[16]
    cdef rf_entry *e
    cdef double t
    if n <= RF_HDR or p[0] != RF_DATA or p[1] != 0 or p[2] != 0 or p[3] != 0:
        return RF_PUNT
    ch = dp_le32(p + 4)
    if ch == 0 or ch > RF_MAX_CHANNEL:
        return RF_PUNT
    if rf_key_of(sa, &family, port, addr) < 0:
        return RF_PUNT
    e = rf_find(st, family, port, addr, ch)
    if e == NULL:
        return RF_DROP_UNKNOWN
    if e.expires_ns <= now:
        return RF_DROP_EXPIRED
    if now > e.last_ns:
        t = e.tokens + <double>(now - e.last_ns) * 1e-9 * st.rate
        e.tokens = st.burst if t > st.burst else t
        e.last_ns = now
    if e.tokens < 1.0:
        return RF_DROP_RATE
    e.tokens -= 1.0
    e.forwarded += 1
    e.bytes += n - RF_HDR
    dp_put_le32(p + 4, e.dst_channel)
    memset(out, 0, sizeof(sockaddr_storage))
    memcpy(out, e.dst, e.dstlen)
    outlen[0] = e.dstlen
    hit[0] = e
    return RF_FORWARD


cdef int rf_punt(rf_state *st, const uint8_t *pkt, uint32_t n,
                 const sockaddr_storage *sa) noexcept nogil:
    """One punt message (header as _fp_punt.pxi's DATAGRAM) + the datagram, one writev."""
    cdef uint8_t hdr[DP_PUNT_HDR]
    cdef iovec iov[2]
    cdef const uint8_t *raw = <const uint8_t *>sa
    memset(hdr, 0, DP_PUNT_HDR)
    hdr[0] = DP_PUNT_DATAGRAM
    if sa.ss_family == AF_INET:
        hdr[1] = 4
        memcpy(hdr + 12, raw + 4, 4)
    elif sa.ss_family == AF_INET6:
        hdr[1] = 6
        memcpy(hdr + 12, raw + 8, 16)
    hdr[2] = raw[2]
    hdr[3] = raw[3]
    iov[0].iov_base = hdr
    iov[0].iov_len = DP_PUNT_HDR
    iov[1].iov_base = <void *>pkt
    iov[1].iov_len = n
    if writev(st.punt_fd, iov, 2) < 0:
        return -1
    return 0


# --- the loop -------------------------------------------------------------------------------------

cdef int rf_send_one(rf_state *st, int k) noexcept nogil:
    """Queued message k as separate datagrams (a GSO run the kernel refused); -errno or 0."""
    cdef uint32_t off = st.out_off[k]
    cdef uint32_t left = st.out_len[k]
    cdef uint32_t seg = st.out_gso[k]
    cdef uint32_t n
    cdef int r
    while left > 0:
        n = seg if left > seg else left
        st.b.dst[0] = &st.out_sa[k]
        st.b.dstlen[0] = st.out_salen[k]
        st.b.gso[0] = 0
        r = ub_send(st.b, st.udp_fd, st.buf, &off, &n, 1)
        if r < 0:
            st.c.send_errors += 1
        elif r == 0:
            st.c.drop_send += 1
        off += n
        left -= n
    return 0


cdef int rf_send_all(rf_state *st, int nout) noexcept nogil:
    """sendmmsg the queued messages; a full socket buffer is waited for RF_SEND_WAIT_MS."""
    cdef int k = 0
    cdef int j, m, r
    cdef pollfd p
    cdef uint64_t now
    cdef uint64_t give_up = 0
    while k < nout:
        m = nout - k
        if m > UB_MAX:
            m = UB_MAX
        for j in range(m):
            st.b.dst[j] = &st.out_sa[k + j]
            st.b.dstlen[j] = st.out_salen[k + j]
            st.b.gso[j] = st.out_gso[k + j]
        st.c.sendmmsg_calls += 1
        r = ub_send(st.b, st.udp_fd, st.buf, &st.out_off[k], &st.out_len[k], m)
        if r > 0:
            k += r
            continue
        if r < 0:               # message k cannot go as it is
            if st.out_gso[k]:   # a GSO run the kernel refuses (EIO, EINVAL): one by one
                st.c.gso_fallbacks += 1
                rf_send_one(st, k)
            else:               # no route, too big: the next may go
                st.c.send_errors += 1
            k += 1
            continue
        now = rf_now_ns()
        if give_up == 0:
            give_up = now + <uint64_t>RF_SEND_WAIT_MS * 1000000
        if now >= give_up or st.stop:
            while k < nout:
                st.c.drop_send += (st.out_len[k] + st.out_gso[k] - 1) // st.out_gso[k] \
                    if st.out_gso[k] else 1
                k += 1
            return 0
        st.c.eagain_waits += 1
        p.fd = st.udp_fd
        p.events = POLLOUT
        p.revents = 0
        poll(&p, 1, <int>((give_up - now) // 1000000) + 1)
    return 0


cdef int rf_count(rf_state *st, int v) noexcept nogil:
    if v == RF_DROP_UNKNOWN:
        st.c.drop_unknown += 1
    elif v == RF_DROP_EXPIRED:
        st.c.drop_expired += 1
    elif v == RF_DROP_RATE:
        st.c.drop_rate += 1
    elif v == RF_DROP_AQM:
        st.c.drop_aqm += 1
    return 0


cdef int rf_aqm(rf_state *st, rf_entry *e, uint32_t n, uint64_t sojourn, uint64_t now,
                bint empty) noexcept nogil:
    """CoDel's decision on a datagram of n bytes the table forwards through e: RF_DROP_AQM
    (the entry's count of it taken back) or RF_FORWARD."""
    if not st.aqm or n <= RF_AQM_SMALL or not codel_decide(&st.cd, sojourn, now, empty):
        return RF_FORWARD
    e.forwarded -= 1
    e.bytes -= n - RF_HDR
    return RF_DROP_AQM


cdef int rf_take(rf_state *st, int i, uint64_t now, uint64_t sojourn, bint empty, int *nout,
                 int *npunt) noexcept nogil:
    """Classify received buffer i (one datagram, or a UDP_GRO run of segments that waited
    `sojourn` ns in the receive queue) into the out and punt queues (the caller holds
    st.lock)."""
    cdef uint32_t base = st.offsets[i]
    cdef uint32_t total = st.lengths[i]
    cdef uint32_t seg = st.b.gso[i]
    cdef uint32_t off = 0
    cdef uint32_t n
    cdef int v
    cdef rf_entry *e = NULL
    cdef int first = nout[0]
    cdef bint whole = 1          # every segment forwarded, all to one destination
    if seg == 0 or seg >= total:
        seg = total
    else:
        st.c.gro_runs += 1
    while off < total:
        n = seg if total - off > seg else total - off
        if nout[0] >= RF_OUT or npunt[0] >= RF_OUT:  # more segments than any kernel makes
            st.c.drop_truncated += 1
            whole = 0
            off += n
            continue
        v = rf_classify(st, st.buf + base + off, n, &st.b.addrs[i], now,
                        &st.out_sa[nout[0]], &st.out_salen[nout[0]], &e)
        if v == RF_FORWARD:
            v = rf_aqm(st, e, n, sojourn, now, empty)
        if v == RF_FORWARD:
            if (nout[0] > first and (st.out_salen[nout[0]] != st.out_salen[first]
                    or memcmp(&st.out_sa[nout[0]], &st.out_sa[first],
                              st.out_salen[first]) != 0)):
                whole = 0
            st.out_off[nout[0]] = base + off
            st.out_len[nout[0]] = n
            st.out_gso[nout[0]] = 0
            st.c.forwarded += 1
            st.c.forwarded_bytes += n - RF_HDR
            nout[0] += 1
        else:
            whole = 0
            if v == RF_PUNT:
                st.punt_off[npunt[0]] = base + off
                st.punt_len[npunt[0]] = n
                st.punt_src[npunt[0]] = <uint8_t>i
                npunt[0] += 1
            else:
                rf_count(st, v)
        off += n
    if whole and nout[0] - first > 1:   # the run goes out as it came: one GSO message
        st.out_len[first] = total
        st.out_gso[first] = <uint16_t>seg
        nout[0] = first + 1
        st.c.gso_sends += 1
    return 0


cdef void rf_loop(rf_state *st) noexcept nogil:
    cdef pollfd fds[2]
    cdef int n, i, r
    cdef int nout, npunt
    cdef uint64_t now, rt, sojourn
    cdef double t
    dp_name_thread("enclave-relay")
    while not st.stop:
        fds[0].fd = st.udp_fd
        fds[0].events = POLLIN
        fds[0].revents = 0
        fds[1].fd = st.wake_fd
        fds[1].events = POLLIN
        fds[1].revents = 0
        r = poll(fds, 2, 1000)
        if st.stop:
            break
        if r <= 0 or not (fds[0].revents & POLLIN):
            continue
        n = ub_recv(st.b, st.udp_fd, st.buf, st.offsets, st.sizes, st.lengths, RF_BATCH)
        if n < 0:
            st.c.recv_errors += 1
            if n == -EBADF or n == -ENOTSOCK:
                break
            continue
        if n == 0:
            continue
        st.c.rounds += 1
        st.c.datagrams += n
        nout = 0
        npunt = 0
        now = rf_now_ns()
        pthread_mutex_lock(&st.lock)
        for i in range(n):
            if st.b.trunc[i]:
                st.c.drop_truncated += 1
                continue
            sojourn = 0
            if st.b.tstamp[i]:          # per buffer: the round's work before it is waiting too
                rt = dp_realtime_ns()
                sojourn = rt - st.b.tstamp[i] if rt > st.b.tstamp[i] else 0
                now = rf_now_ns()
                st.c.aqm_timed += 1
                st.c.aqm_wait_us += sojourn // 1000
                if sojourn // 1000 > st.c.aqm_wait_max_us:
                    st.c.aqm_wait_max_us = sojourn // 1000
            rf_take(st, i, now, sojourn, n < RF_BATCH and i == n - 1, &nout, &npunt)
        pthread_mutex_unlock(&st.lock)
        if npunt:
            t = st.punt_tokens + <double>(now - st.punt_last_ns) * 1e-9 * st.punt_rate \
                if now > st.punt_last_ns else st.punt_tokens
            st.punt_tokens = st.punt_burst if t > st.punt_burst else t
            st.punt_last_ns = now
        for i in range(npunt):
            if st.punt_tokens < 1.0:
                st.c.drop_punt_rate += 1
                continue
            st.punt_tokens -= 1.0
            if rf_punt(st, st.buf + st.punt_off[i], st.punt_len[i],
                       &st.b.addrs[st.punt_src[i]]) < 0:
                st.c.punt_dropped += 1
            else:
                st.c.punted += 1
        if nout:
            rf_send_all(st, nout)


# --- Python side ----------------------------------------------------------------------------------

if (int(_dp_wire.MSG_RELAY_DATA) != RF_DATA or int(_dp_wire.RELAY_HEADER_SIZE) != RF_HDR
        or int(_dp_wire.RELAY_MAX_CHANNEL) != RF_MAX_CHANNEL):
    raise ImportError("enclave.proto.wire's relay constants differ from _fp_relayfwd.pxi's")

# RelayForwarder.counters() keys that count a dropped datagram (platform metrics: reason label)
RELAY_DROP_COUNTERS: tuple = ("drop_unknown", "drop_expired", "drop_rate", "drop_aqm",
                              "drop_send", "drop_truncated", "send_errors", "punt_dropped",
                              "drop_punt_rate")


cdef int _rf_key_from(object src, uint8_t *family, uint8_t *port, uint8_t *addr) except -1:
    cdef bytes raw
    cdef sockaddr_storage sa
    host, p = src
    if not 0 < int(p) < 65536:
        raise ValueError(f"bad port {p!r}")
    raw = _pack_sockaddr(str(host), int(p))
    memset(&sa, 0, sizeof(sa))
    memcpy(&sa, <const char *>raw, len(raw))
    if rf_key_of(&sa, family, port, addr) < 0:
        raise ValueError(f"unsupported address {src!r}")
    return 0


cdef int _rf_channel(int channel) except -1:
    if not 0 < channel <= RF_MAX_CHANNEL:
        raise ValueError(f"relay channel {channel} out of 1..{RF_MAX_CHANNEL}")
    return 0


@cython.final
cdef class RelayForwarder:
    """The relay's DATA forwarding over an open UDP socket fd, in the native thread
    enclave-relay (start/stop); see the top of _fp_relayfwd.pxi.

    install(src, ch, dst, dst_ch, lifetime): DATA(ch) from src goes to dst as DATA(dst_ch) for
    `lifetime` seconds (an existing entry is replaced in place: counters and tokens kept);
    remove(src, ch). Every entry has a token bucket of `rate` datagrams per second (`burst`
    deep). What the thread does not forward or drop arrives on ``punt_socket``, at most
    `punt_rate` messages a second (`punt_burst` deep). CoDel with `aqm_target_ns` /
    `aqm_interval_ns` on the socket's receive queue (target 0: off; off as well when the
    kernel gives no SO_TIMESTAMPNS).
    """

    cdef rf_state *st
    cdef readonly object punt_socket
    cdef object _c_sock
    cdef int _wake
    cdef object _thread
    cdef readonly int max_entries

    def __cinit__(self, int udp_fd, *, int max_entries=65536, double rate=200000.0,
                  double burst=20000.0, double punt_rate=20000.0, double punt_burst=2000.0,
                  uint64_t aqm_target_ns=RELAY_AQM_TARGET_NS,
                  uint64_t aqm_interval_ns=RELAY_AQM_INTERVAL_NS):
        cdef uint32_t cap = 16
        cdef int i
        self.st = NULL
        self._wake = -1
        self._thread = None
        if udp_fd < 0:
            raise ValueError("udp_fd must be an open file descriptor")
        if not 1 <= max_entries <= (1 << 22):
            raise ValueError("max_entries must be 1..2**22")
        if not (rate > 0.0 and burst >= 1.0):
            raise ValueError("rate must be > 0 and burst >= 1")
        if not (punt_rate > 0.0 and punt_burst >= 1.0):
            raise ValueError("punt_rate must be > 0 and punt_burst >= 1")
        if aqm_target_ns and not aqm_interval_ns > aqm_target_ns:
            raise ValueError("aqm_interval_ns must be larger than aqm_target_ns")
        while cap < <uint32_t>(2 * max_entries):
            cap <<= 1
        self.st = <rf_state *>calloc(1, sizeof(rf_state))
        if self.st == NULL:
            raise MemoryError()
        pthread_mutex_init(&self.st.lock, NULL)
        self.st.table = <rf_entry *>calloc(cap, sizeof(rf_entry))
        self.st.buf = <uint8_t *>malloc(<size_t>RF_BATCH * RF_SLOT)
        if posix_memalign(<void **>&self.st.b, 64, sizeof(udp_batch)) != 0:
            self.st.b = NULL
        if self.st.table == NULL or self.st.buf == NULL or self.st.b == NULL:
            raise MemoryError()
        memset(self.st.b, 0, sizeof(udp_batch))
        for i in range(RF_BATCH):
            self.st.offsets[i] = <uint32_t>(i * RF_SLOT)
            self.st.sizes[i] = RF_SLOT
        self.st.mask = cap - 1
        self.st.max_entries = <uint32_t>max_entries
        self.st.rate = rate
        self.st.burst = burst
        self.st.punt_rate = punt_rate
        self.st.punt_burst = punt_burst
        self.st.punt_tokens = punt_burst
        self.st.punt_last_ns = rf_now_ns()
        codel_init(&self.st.cd, aqm_target_ns, aqm_interval_ns)
        self.st.seed = int.from_bytes(_dp_os.urandom(8), "little")
        self.st.udp_fd = udp_fd
        self.max_entries = max_entries
        dup = _dp_os.dup(udp_fd)     # UDP_GRO: an agent's GSO run arrives as one buffer
        try:
            gs = _dp_socket.socket(fileno=dup)
        except OSError:
            _dp_os.close(dup)
        else:
            try:
                gs.setsockopt(<int>SOL_UDP, <int>UDP_GRO, 1)
                self.st.gro = 1
            except OSError:
                self.st.gro = 0      # an older kernel: one datagram per buffer
            try:                     # each buffer's kernel arrival time: CoDel's sojourn
                gs.setsockopt(_dp_socket.SOL_SOCKET, <int>SO_TIMESTAMPNS, 1)
                self.st.aqm = 1 if aqm_target_ns else 0
            except OSError:
                self.st.aqm = 0
            finally:
                gs.close()
        a, b = _dp_socket.socketpair(_dp_socket.AF_UNIX, _dp_socket.SOCK_DGRAM)
        for sock in (a, b):
            sock.setblocking(False)
            try:
                sock.setsockopt(_dp_socket.SOL_SOCKET, _dp_socket.SO_SNDBUF, 4 << 20)
                sock.setsockopt(_dp_socket.SOL_SOCKET, _dp_socket.SO_RCVBUF, 4 << 20)
            except OSError:
                pass
        self.punt_socket = a
        self._c_sock = b
        self.st.punt_fd = b.fileno()
        self._wake = _dp_os.eventfd(0, _dp_os.EFD_NONBLOCK | _dp_os.EFD_CLOEXEC)
        self.st.wake_fd = self._wake

    def __dealloc__(self):
        if self.st == NULL:
            return
        # the thread holds a reference to self while it runs, so none is running here
        free(self.st.table)
        free(self.st.buf)
        free(self.st.b)
        pthread_mutex_destroy(&self.st.lock)
        free(self.st)
        self.st = NULL
        if self._wake >= 0:
            _dp_os.close(self._wake)
            self._wake = -1

    # -- the table ------------------------------------------------------------------------------

    def install(self, src, int channel, dst, int dst_channel, double lifetime) -> None:
        """DATA(channel) from src (host, port) is forwarded to dst as DATA(dst_channel) for
        `lifetime` seconds; OverflowError when max_entries are installed already."""
        cdef uint8_t family, dfamily
        cdef uint8_t port[2]
        cdef uint8_t dport[2]
        cdef uint8_t addr[16]
        cdef uint8_t daddr[16]
        cdef bytes draw
        cdef rf_entry *e
        cdef uint32_t h
        cdef uint64_t now = rf_now_ns()
        cdef uint64_t expires
        _rf_channel(channel)
        _rf_channel(dst_channel)
        _rf_key_from(src, &family, port, addr)
        _rf_key_from(dst, &dfamily, dport, daddr)
        # a sockaddr_in goes out of a dual-stack AF_INET6 socket as well (_fp_udp.pxi)
        draw = _pack_sockaddr(str(dst[0]), int(dst[1]))
        if not lifetime > 0.0:
            raise ValueError("lifetime must be > 0 seconds")
        expires = now + <uint64_t>(min(lifetime, 1e7) * 1e9)
        with nogil:
            pthread_mutex_lock(&self.st.lock)
        e = rf_find(self.st, family, port, addr, <uint32_t>channel)
        if e == NULL:
            if self.st.count >= self.st.max_entries:
                pthread_mutex_unlock(&self.st.lock)
                raise OverflowError(f"relay forwarding table full ({self.st.max_entries})")
            h = rf_hash(self.st, family, port, addr, <uint32_t>channel)
            while self.st.table[h].family != 0:
                h = (h + 1) & self.st.mask
            e = &self.st.table[h]
            memset(e, 0, sizeof(rf_entry))
            memcpy(e.addr, addr, 16)
            e.port[0] = port[0]
            e.port[1] = port[1]
            e.channel = <uint32_t>channel
            e.tokens = self.st.burst
            e.last_ns = now
            e.family = family
            self.st.count += 1
        e.dst_channel = <uint32_t>dst_channel
        e.expires_ns = expires
        memset(e.dst, 0, RF_SALEN)
        memcpy(e.dst, <const char *>draw, len(draw))
        e.dstlen = <uint8_t>len(draw)
        pthread_mutex_unlock(&self.st.lock)

    def remove(self, src, int channel) -> bool:
        """Forget the entry of (src, channel); whether there was one."""
        cdef uint8_t family
        cdef uint8_t port[2]
        cdef uint8_t addr[16]
        cdef rf_entry *e
        _rf_channel(channel)
        _rf_key_from(src, &family, port, addr)
        with nogil:
            pthread_mutex_lock(&self.st.lock)
        e = rf_find(self.st, family, port, addr, <uint32_t>channel)
        if e != NULL:
            rf_delete(self.st, e)
        pthread_mutex_unlock(&self.st.lock)
        return e != NULL

    def lookup(self, src, int channel):
        """(dst, dst_channel, seconds left, forwarded, payload bytes) of an entry, or None."""
        cdef uint8_t family
        cdef uint8_t port[2]
        cdef uint8_t addr[16]
        cdef rf_entry *e
        cdef rf_entry copy
        cdef uint64_t now = rf_now_ns()
        _rf_channel(channel)
        _rf_key_from(src, &family, port, addr)
        with nogil:
            pthread_mutex_lock(&self.st.lock)
        e = rf_find(self.st, family, port, addr, <uint32_t>channel)
        if e != NULL:
            copy = e[0]
        pthread_mutex_unlock(&self.st.lock)
        if e == NULL:
            return None
        left = (<double>copy.expires_ns - <double>now) / 1e9
        return (_unpack_sockaddr((<const char *>copy.dst)[:copy.dstlen]), copy.dst_channel,
                max(0.0, left), copy.forwarded, copy.bytes)

    def __len__(self) -> int:
        return self.st.count

    def clear(self) -> None:
        with nogil:
            pthread_mutex_lock(&self.st.lock)
        memset(self.st.table, 0, (<size_t>self.st.mask + 1) * sizeof(rf_entry))
        self.st.count = 0
        pthread_mutex_unlock(&self.st.lock)

    def classify(self, data, src):
        """The thread's decision for one datagram, without I/O (for tests and tools):
        ("forward", bytes with the header rewritten, dst), ("punt",), or ("drop", reason).
        Counts into the entry (bucket, forwarded) as the thread would."""
        cdef bytearray buf = bytearray(data)
        cdef bytes raw
        cdef sockaddr_storage sa
        cdef sockaddr_storage out
        cdef socklen_t outlen = 0
        cdef int v
        cdef rf_entry *e = NULL
        cdef uint8_t *p
        cdef uint32_t n = <uint32_t>len(buf)
        raw = _pack_sockaddr(str(src[0]), int(src[1]))
        memset(&sa, 0, sizeof(sa))
        memcpy(&sa, <const char *>raw, len(raw))
        p = <uint8_t *>(<char *>buf) if n else NULL
        if n == 0:
            return ("punt",)
        with nogil:
            pthread_mutex_lock(&self.st.lock)
            v = rf_classify(self.st, p, n, &sa, rf_now_ns(), &out, &outlen, &e)
            pthread_mutex_unlock(&self.st.lock)
        if v == RF_FORWARD:
            return ("forward", bytes(buf), _unpack_sockaddr((<const char *>&out)[:outlen]))
        if v == RF_PUNT:
            return ("punt",)
        return ("drop", {RF_DROP_UNKNOWN: "drop_unknown", RF_DROP_EXPIRED: "drop_expired",
                         RF_DROP_RATE: "drop_rate"}[v])

    # -- counters ---------------------------------------------------------------------------------

    def counters(self) -> dict:
        """The thread's counters (drops by reason: RELAY_DROP_COUNTERS) and the table size."""
        cdef rf_counters c = self.st.c
        return {
            "datagrams": c.datagrams, "rounds": c.rounds, "forwarded": c.forwarded,
            "forwarded_bytes": c.forwarded_bytes, "punted": c.punted,
            "punt_dropped": c.punt_dropped, "drop_unknown": c.drop_unknown,
            "drop_expired": c.drop_expired, "drop_rate": c.drop_rate,
            "drop_send": c.drop_send, "drop_truncated": c.drop_truncated,
            "send_errors": c.send_errors, "recv_errors": c.recv_errors,
            "sendmmsg_calls": c.sendmmsg_calls, "eagain_waits": c.eagain_waits,
            "gro_runs": c.gro_runs, "gso_sends": c.gso_sends, "gso_fallbacks": c.gso_fallbacks,
            "drop_aqm": c.drop_aqm, "drop_punt_rate": c.drop_punt_rate,
            "aqm_timed": c.aqm_timed, "aqm_wait_us": c.aqm_wait_us,
            "aqm_wait_max_us": c.aqm_wait_max_us,
            "entries": self.st.count, "udp_gro": bool(self.st.gro), "aqm": bool(self.st.aqm),
        }

    # -- the thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        with nogil:
            rf_loop(self.st)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("relay forwarder already started")
        self.st.stop = 0
        self._thread = _dp_threading.Thread(target=self._run, name="enclave-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Wake the thread and join it (it notices within one poll round)."""
        if self._thread is None:
            return
        self.st.stop = 1
        _dp_os.eventfd_write(self._wake, 1)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("relay forwarder thread did not stop")
        self._thread = None
        _dp_os.eventfd_read(self._wake)

    def close(self) -> None:
        """Stop the thread and close the punt sockets (the UDP socket is the caller's)."""
        self.stop()
        self.punt_socket.close()
        self._c_sock.close()
