# Shared state of the data-plane loops: declarations, the peer table (immutable snapshots),
# the keys' raw AEAD calls, and the epochs that say when a retired snapshot may be freed.
# (included by _fastpath.pyx after _fp_offload.pxi; first of _fp_epoch, _fp_punt, _fp_icmp,
# _fp_tx, _fp_rx, _fp_dataplane, which together are the compiled DataPlane).
#
#   Python (DataPlane.install/remove)        every worker's tx and rx thread (each round)
#     1. build a dp_snap from its slots        1. dp_enter: record the generation in use,
#     2. publish it: one atomic pointer store     load the current snapshot
#        + generation bump                     2. dp_find(receiver index) -> dp_rxkey,
#     3. retire the old snapshot with the         peers[slot].tx -> dp_txkey
#        keys only it used                     3. dp_leave before sleeping in poll
#     4. reclaim: free what every thread          ("quiescent")
#        has moved past
#
# Sessions and keys (Python installs, the loops read): an immutable snapshot (dp_snap: peers,
# flood list, receiver-index hash table) published with one atomic pointer store. Keys and
# their mutable state (tx counter, replay window) live in separately allocated structs shared
# by consecutive snapshots, so a rekey never resets a counter or exposes half a session.
# Reclamation is epoch based: every loop round a thread records the generation it runs on
# (or "quiescent" while it sleeps in poll); a retired snapshot and the keys only it used are
# freed once every thread of every worker has moved past its generation.
#
# Workers (DataPlane(queues=...), `enclave up --threads N`): N tx + N rx threads read the same
# snapshot. What they write in shared keys is made safe for N: a tx key's counter is reserved
# with one atomic fetch-add per TAP read (dp_tx_emit: never a nonce twice), a receive key's
# replay window is checked and moved under the key's lock (dp_rx_lock); the rest a worker
# writes is its own (counters, CoDel state, buffers), summed when Python reads it.
#
from libc.errno cimport EINVAL, EIO, ENOBUFS, EOPNOTSUPP
from libc.stdlib cimport malloc
from libc.string cimport memcmp
from posix.unistd cimport read as _c_read, write as _c_write
from posix.uio cimport writev
import os as _dp_os
import socket as _dp_socket
import threading as _dp_threading
import hashlib as _dp_hashlib
import ipaddress as _dp_ipaddress

from enclave.proto import wire as _dp_wire
from enclave.proto import timing as _dp_timing

cdef extern from *:
    """
    #include <pthread.h>
    #include <stdio.h>
    #include <time.h>
    #include <sys/socket.h>
    #include <netinet/in.h>
    static inline void *dp_load_ptr(void **p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static inline void dp_store_ptr(void **p, void *v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    static inline uint64_t dp_load_u64(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static inline void dp_store_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    /* a tx key's counters: reserved by one atomic add, so N tx workers never reuse a nonce */
    static inline uint64_t dp_fetch_add_u64(uint64_t *p, uint64_t v) {
        return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
    }
    static inline void dp_name_thread(const char *name) {
        pthread_setname_np(pthread_self(), name);   /* top -H / perf --sort comm */
    }
    static inline void dp_name_worker(const char *base, int worker) {
        char n[16];                                 /* worker 0: base; k > 0: base + k */
        if (worker == 0) snprintf(n, sizeof n, "%s", base);
        else snprintf(n, sizeof n, "%s%d", base, worker);
        pthread_setname_np(pthread_self(), n);
    }
    static inline uint64_t dp_now_ms(void) {
        struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000u + (uint64_t)(ts.tv_nsec / 1000000);
    }
    static inline ssize_t dp_send_dgram(int fd, const void *b, size_t n) {
        return send(fd, b, n, MSG_DONTWAIT);
    }
    static inline ssize_t dp_recv_dgram(int fd, void *b, size_t n, int *trunc) {
        ssize_t r = recv(fd, b, n, MSG_DONTWAIT | MSG_TRUNC);
        *trunc = r > (ssize_t)n;
        return r;
    }
    static inline uint32_t dp_le32(const uint8_t *p) {
        return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    }
    static inline uint64_t dp_le64(const uint8_t *p) {
        return (uint64_t)dp_le32(p) | ((uint64_t)dp_le32(p + 4) << 32);
    }
    static inline void dp_put_le32(uint8_t *p, uint32_t v) {
        p[0] = v & 0xFF; p[1] = (v >> 8) & 0xFF; p[2] = (v >> 16) & 0xFF; p[3] = v >> 24;
    }
    static inline void dp_put_le64(uint8_t *p, uint64_t v) {
        dp_put_le32(p, (uint32_t)v); dp_put_le32(p + 4, (uint32_t)(v >> 32));
    }
    """
    void *dp_load_ptr(void **p) noexcept nogil
    void dp_store_ptr(void **p, void *v) noexcept nogil
    uint64_t dp_load_u64(uint64_t *p) noexcept nogil
    void dp_store_u64(uint64_t *p, uint64_t v) noexcept nogil
    uint64_t dp_fetch_add_u64(uint64_t *p, uint64_t v) noexcept nogil
    uint64_t dp_now_ms() noexcept nogil
    void dp_name_thread(const char *name) noexcept nogil
    void dp_name_worker(const char *base, int worker) noexcept nogil
    ssize_t dp_send_dgram(int fd, const void *b, size_t n) noexcept nogil
    ssize_t dp_recv_dgram(int fd, void *b, size_t n, int *trunc) noexcept nogil
    uint32_t dp_le32(const uint8_t *p) noexcept nogil
    uint64_t dp_le64(const uint8_t *p) noexcept nogil
    void dp_put_le32(uint8_t *p, uint32_t v) noexcept nogil
    void dp_put_le64(uint8_t *p, uint64_t v) noexcept nogil
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *m, void *attr) nogil
    int pthread_mutex_lock(pthread_mutex_t *m) nogil
    int pthread_mutex_unlock(pthread_mutex_t *m) nogil
    int pthread_mutex_destroy(pthread_mutex_t *m) nogil
    enum:
        AF_INET
        AF_INET6
        POLLOUT

cdef enum:
    DP_HDR = 16                 # DATA header (wire.DATA_HEADER_SIZE, checked at import)
    DP_TAG = 16                 # AEAD tag (wire.AEAD_TAG_SIZE); a key's own: fp_tag_bytes
    DP_MAX_OVERHEAD = 48        # header + the largest tag (AEGIS-256's 32): buffer sizing
    DP_MAX_RX = 4               # receive keys per peer (current, previous, pending + spare)
    DP_MAX_WORKERS = 64         # tx + rx thread pairs per DataPlane (one TAP queue each)
    DP_PUNT_HDR = 28
    DP_TX_ENTRIES = 256         # datagrams per tx flush
    DP_TX_READS = 128           # TAP reads per round before a flush
    DP_RBUF = 65536 + 64        # one TAP read (vnet header + super-frame)
    DP_TX_BUF = 1 << 19         # tx batch buffer
    DP_GSO_MAX_BYTES = 65000    # one UDP GSO message (UDP length field limit, with margin)
    DP_RX_INJECT = 32           # injected packets taken per round
    DP_QUIESCENT = -1
    DP_ETH = 14

    # punt kinds
    DP_PUNT_DATAGRAM = 1
    DP_PUNT_FIRST_RX = 2
    DP_PUNT_ROAMED = 3
    DP_PUNT_TX = 4
    DP_PUNT_INJECT = 5

PUNT_HEADER_LEN: int = DP_PUNT_HDR
PUNT_DATAGRAM: int = DP_PUNT_DATAGRAM
PUNT_FIRST_RX: int = DP_PUNT_FIRST_RX
PUNT_ROAMED: int = DP_PUNT_ROAMED
PUNT_TX: int = DP_PUNT_TX
PUNT_INJECT: int = DP_PUNT_INJECT
DATAPLANE_MAX_RX_KEYS: int = DP_MAX_RX
DATAPLANE_MAX_WORKERS: int = DP_MAX_WORKERS

if (_dp_wire.DATA_HEADER_SIZE != DP_HDR or _dp_wire.AEAD_TAG_SIZE != DP_TAG
        or DP_HDR + _dp_wire.MAX_AEAD_TAG_SIZE != DP_MAX_OVERHEAD
        or _dp_wire.MAX_AEAD_TAG_SIZE != _MAX_TAG_BYTES):
    raise ImportError("enclave.proto.wire DATA header / tag sizes differ from the fast path's")
cdef uint8_t DP_MSG_DATA = _dp_wire.MSG_DATA
cdef uint64_t DP_DEFAULT_LIMIT = _dp_timing.REJECT_AFTER_MESSAGES


ctypedef struct dp_txkey:
    int kind
    void *state
    uint32_t remote_index
    uint64_t next               # next counter: taken with dp_fetch_add_u64 by every tx
                                # worker (may pass limit; readers clamp it)
    uint64_t limit              # counters >= limit are never used

ctypedef struct dp_rxkey:
    int kind
    void *state
    uint32_t local_index
    int32_t slot
    int current                 # pairs with the tx key: may move the peer's address
    int notified                # FIRST_RX sent
    uint64_t frames             # authentic packets (under lock with several workers)
    pthread_mutex_t lock        # win, frames, notified when nworkers > 1 (dp_rx_lock)
    rw_window win

ctypedef struct dp_route:       # an IPv4 network behind a gateway peer (certified)
    uint32_t net                # host byte order
    uint32_t mask

ctypedef struct dp_ident:       # the peer's certified overlay addresses; immutable, shared
    uint32_t ip4                # by snapshots like the keys; host byte order, 0 = none
                                # (what the rx loop binds frames to: _fp_ident.pxi)
    int nip6
    int nroutes
    uint8_t *ip6                # nip6 * 16 bytes (in the same allocation)
    dp_route *routes            # nroutes entries (in the same allocation)

ctypedef struct dp_peer:        # inside a snapshot: immutable once published
    int active
    int bridging
    int via_python
    uint32_t relay_ch           # UDP relay channel (0: not relayed natively; _fp_relaypath)
    uint64_t mac
    dp_txkey *tx
    dp_ident *ident             # NULL: no certified addresses (fp_ident_check)

ctypedef struct dp_idx:
    uint32_t index              # 0 = empty bucket
    dp_rxkey *rx

ctypedef struct dp_snap:
    dp_peer *peers              # max_peers entries
    int32_t *flood              # slots with a tx key
    int nflood
    dp_idx *idx
    uint32_t idx_mask

ctypedef struct dp_addr:
    pthread_mutex_t lock
    sockaddr_storage sa
    socklen_t len               # 0 = no address

# Counters: rx-thread and tx-thread fields in separate arrays (no false sharing).
ctypedef struct dp_rxc:
    uint64_t frames
    uint64_t bytes
    uint64_t replay
    uint64_t decrypt_fail
    uint64_t spoofed            # Ethernet source not the certified MAC
    uint64_t runt
    uint64_t roamed
    uint64_t ip_spoofed         # IPv4/IPv6 source or ND target not certified (_fp_ident.pxi)
    uint64_t arp_spoofed        # ARP sender MAC / IPv4 not certified
    uint64_t relayed            # RELAY_DATA opened from the slot's relay route (_fp_relaypath)
    uint64_t relay_forged       # RELAY_DATA for the slot from another address or channel
    uint64_t pad[4]

ctypedef struct dp_txc:
    uint64_t frames
    uint64_t bytes
    uint64_t key_limit
    uint64_t no_key
    uint64_t no_addr
    uint64_t send_errors
    uint64_t via_python         # sealed and handed to Python in a TX batch (TCP, TLS relay)
    uint64_t relayed            # sealed and sent to the UDP relay with its header

ctypedef struct dp_grx:         # global, rx thread
    uint64_t datagrams
    uint64_t punted
    uint64_t punt_dropped
    uint64_t unknown_index
    uint64_t malformed
    uint64_t truncated
    uint64_t tap_writes
    uint64_t tap_write_errors
    uint64_t gro_datagrams
    uint64_t injected
    uint64_t rounds
    uint64_t aqm_marks          # CE set by CoDel (_fp_aqm.pxi) instead of a drop
    uint64_t aqm_drops          # dropped by CoDel (not ECN-capable)
    uint64_t aqm_timed          # authentic frames with a kernel arrival time ...
    uint64_t aqm_wait_us        # ... and their summed time in the receive queue
    uint64_t inject_msgs        # INJECT messages (batches; `injected` counts their packets)

ctypedef struct dp_gtx:         # global, tx thread
    uint64_t tap_reads
    uint64_t oversize
    uint64_t icmp_sent
    uint64_t flooded
    uint64_t no_peer
    uint64_t runt
    uint64_t offload_errors
    uint64_t sendmmsg_calls
    uint64_t gso_messages
    uint64_t gso_fallbacks
    uint64_t punt_dropped
    uint64_t eagain_waits
    uint64_t rounds
    uint64_t aqm_marks          # CE set by CoDel on a TAP read (_fp_aqm.pxi)
    uint64_t aqm_drops          # TAP reads dropped by CoDel
    uint64_t aqm_wait_us        # summed time TAP reads waited in the aqm ring (tap_reads: count)
    uint64_t punt_batches       # TX punt messages (batches of sealed packets for Python)

# One dp_state per worker (a tx and an rx thread on its own TAP queue and UDP socket). Worker
# 0's is the DataPlane's own and holds what the workers share: the published snapshot and its
# generation, and the MAC table; every worker reaches them through `main` (worker 0: itself).
# Per worker: the fds, the counters (rxc / txc arrays, grx, gtx: summed on read), seen[2]
# (its two threads' epochs), stop, and the loops' knobs (copied from worker 0 at start).
ctypedef struct dp_state:
    dp_state *main              # worker 0's state (the shared snapshot and MAC table)
    int worker                  # 0 .. nworkers - 1
    int nworkers
    int tap_fd                  # this worker's TAP queue
    int udp_fd                  # this worker's SO_REUSEPORT socket
    int wake_fd
    int punt_fd
    int vnet_hdr
    int tap_gro
    int udp_gso
    int udp_gro
    uint32_t mtu
    uint32_t max_frame
    int max_peers
    int stop
    uint32_t tx_flush_bytes     # flush the tx batch once this many bytes are queued ...
    int tx_flush_frames         # ... or this many datagrams (latency vs syscalls)
    int rx_batch                # datagrams (GRO buffers) per recvmmsg
    int aqm                     # CoDel on the tx ring and the UDP receive queue (_fp_aqm.pxi)
    uint64_t aqm_target_ns      # its target and interval (DataPlane.tune)
    uint64_t aqm_interval_ns
    void *snap                  # worker 0 only (dp_enter reads main.snap / main.gen)
    uint64_t gen
    uint64_t seen[2]            # per thread of this worker: generation in use, or DP_QUIESCENT
    pthread_mutex_t mt_lock     # worker 0 only (the loops lock main.mt_lock)
    mt_table mt
    dp_addr *addrs              # shared by all workers (each entry has its lock)
    dp_rxc *rxc
    dp_txc *txc
    dp_grx grx
    dp_gtx gtx


# --- AEAD with the key's raw state (the AeadKey object is kept alive by Python) --------------

cdef inline int dp_seal(int kind, void *state, uint8_t *hdr, const uint8_t *src, size_t n,
                        uint64_t counter) noexcept nogil:
    """Encrypt src[0:n] into hdr + 16 (may be the same bytes), the kind's tag after it (16
    bytes; AEGIS-256: 32); AD = hdr[0:16]."""
    return fp_seal(kind, state, hdr + DP_HDR, src, n, hdr, DP_HDR, counter)


cdef inline int dp_open(int kind, void *state, uint8_t *pkt, size_t clen,
                        uint64_t counter) noexcept nogil:
    """Authenticate + decrypt pkt[16:16+clen] in place (clen includes the tag); 0 if authentic."""
    return fp_open(kind, state, pkt + DP_HDR, clen, pkt, DP_HDR, counter)


cdef inline size_t dp_overhead(int kind) noexcept nogil:
    """Bytes a DATA datagram adds to its frame under a key of this kind: header + tag."""
    return DP_HDR + fp_tag_bytes(kind)


cdef inline void dp_header(uint8_t *h, uint32_t receiver, uint64_t counter) noexcept nogil:
    h[0] = DP_MSG_DATA
    h[1] = 0
    h[2] = 0
    h[3] = 0
    dp_put_le32(h + 4, receiver)
    dp_put_le64(h + 8, counter)


# --- epochs -----------------------------------------------------------------------------------

cdef inline dp_snap *dp_enter(dp_state *st, int t) noexcept nogil:
    dp_store_u64(&st.seen[t], dp_load_u64(&st.main.gen))
    return <dp_snap *>dp_load_ptr(&st.main.snap)


cdef inline void dp_leave(dp_state *st, int t) noexcept nogil:
    dp_store_u64(&st.seen[t], <uint64_t>DP_QUIESCENT)


cdef inline void dp_rx_lock(const dp_state *st, dp_rxkey *k) noexcept nogil:
    """With several workers a peer's receive key may be used by two rx threads at once (the
    peer's source port changed, so REUSEPORT hashes it to another socket, while the old one
    still holds its packets; or INJECT on worker 0): its replay window is taken under the
    key's lock. One worker: no lock, as before."""
    if st.nworkers > 1:
        pthread_mutex_lock(&k.lock)


cdef inline void dp_rx_unlock(const dp_state *st, dp_rxkey *k) noexcept nogil:
    if st.nworkers > 1:
        pthread_mutex_unlock(&k.lock)


cdef inline dp_rxkey *dp_find(const dp_snap *s, uint32_t index) noexcept nogil:
    cdef uint32_t h
    if index == 0:
        return NULL
    h = (index * <uint32_t>0x9E3779B1) & s.idx_mask
    while s.idx[h].index != 0:
        if s.idx[h].index == index:
            return s.idx[h].rx
        h = (h + 1) & s.idx_mask
    return NULL
