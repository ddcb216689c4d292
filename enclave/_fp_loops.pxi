# The data-plane loops: one native thread per direction, GIL released, no Python per frame
# (included by _fastpath.pyx, after _fp_aead/_fp_replay/_fp_switch/_fp_udp/_fp_offload).
#
#   Outbound (inside -> outside), thread "tx":
#     1. poll(TAP, wake); drain the TAP (up to DP_TX_READS reads per round)
#     2. L2 switch: mt_lookup(dst MAC) -> one peer slot, or flood to every peer with a tx key
#     3. size check: frame > mtu + 14 -> drop (+ ICMP "fragmentation needed" / ICMPv6 "packet
#        too big" written back to the TAP, so path-MTU discovery works)
#     4. vnet_hdr TAP: the (super-)frame is cut into segments <= mtu + 14. For the last (usually
#        only) peer, in place in the read buffer (fo_tso_inplace: each segment's headers are
#        written in front of its payload), so step 5 seals straight from there into the
#        datagram, no payload copy; for earlier peers of a flood, fo_tso_split copies them
#        into the batch buffer (16 bytes of headroom and tailroom each) to be sealed in place
#     5. per segment: counter = key.next++ (stop at key.limit), DATA header, AEAD seal
#        (out of place: TAP read buffer -> batch buffer)
#     6. sendmmsg; consecutive equal-size datagrams to one address become one UDP GSO message
#        (UDP_SEGMENT, <= 64 segments); EAGAIN -> wait for POLLOUT; GSO refused -> fall back
#
#   Inbound (outside -> inside), thread "rx":
#     1. poll(UDP, wake, punt); recvmmsg (UDP_GRO: one buffer may hold a run of datagrams,
#        cut by the gso_size cmsg); datagrams Python sent us through the punt socket (INJECT:
#        DATA that arrived over TCP or the relay) take the same path
#     2. anything not DATA for a known receiver index -> punted to Python (with its source)
#     3. rw_check -> AEAD open -> rw_update (the window moves only for authentic packets)
#     4. anti-spoofing (source MAC must be the peer's certified MAC unless it may bridge),
#        MAC learning, roaming (newest packet on the current key from a new address)
#     5. TAP write: vnet_hdr TAP with offloads -> fo_gro_iov coalesces same-flow TCP segments;
#        one writev per run: the first frame (headers patched, virtio header in its headroom)
#        and every later frame's payload where it was decrypted, no copy in user space
#
#   Buffers (tx batch): the AEAD layout of _fp_aead.pxi, datagrams back to back so a GSO run
#   is one contiguous span:
#     | hdr 16 | ciphertext (frame) | tag 16 | hdr 16 | ciphertext | tag 16 | ...
#
# Sessions and keys (Python installs, the loops read): an immutable snapshot (dp_snap: peers,
# flood list, receiver-index hash table) published with one atomic pointer store. Keys and
# their mutable state (tx counter, replay window) live in separately allocated structs shared
# by consecutive snapshots, so a rekey never resets a counter or exposes half a session.
# Reclamation is epoch based: every loop round a thread records the generation it runs on
# (or "quiescent" while it sleeps in poll); a retired snapshot and the keys only it used are
# freed once every thread has moved past its generation.
#
# Punt socket (AF_UNIX SOCK_DGRAM socketpair; DataPlane.punt_socket is Python's end).
# Every message, either way, starts with this 28-byte header (integers little-endian unless
# marked BE):
#
#    0      1        2..3       4..7          8..11          12..27          28 ...
#   +------+--------+----------+-------------+--------------+---------------+-----------------+
#   | kind | family | port BE  | slot (i32)  | index (u32)  | address (16)  | packet          |
#   +------+--------+----------+-------------+--------------+---------------+-----------------+
#   C -> Python:
#     1 DATAGRAM  a UDP datagram that is not DATA for a known index; address = its source
#     2 FIRST_RX  first authentic packet on receiver `index` of `slot` (no packet)
#     3 ROAMED    `slot` moved to `address` (authentic, newest packet on key `index`)
#     4 TX        an encrypted DATA packet for `slot`, whose path is not UDP: Python sends it
#   Python -> C:
#     5 INJECT    a packet that arrived over TCP / the relay; handled like a UDP datagram,
#                 except that it never moves the peer's address
#   family: 4 or 6 (0 = no address); IPv4 uses the first 4 address bytes.

from libc.errno cimport EINVAL, EIO, ENOBUFS, EOPNOTSUPP
from libc.stdlib cimport malloc
from libc.string cimport memcmp
from posix.unistd cimport read as _c_read, write as _c_write
from posix.uio cimport writev
import os as _dp_os
import socket as _dp_socket
import threading as _dp_threading
import hashlib as _dp_hashlib

from enclave.proto import wire as _dp_wire
from enclave.proto import timing as _dp_timing

cdef extern from *:
    """
    #include <pthread.h>
    #include <time.h>
    #include <sys/socket.h>
    #include <netinet/in.h>
    static inline void *dp_load_ptr(void **p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static inline void dp_store_ptr(void **p, void *v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    static inline uint64_t dp_load_u64(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static inline void dp_store_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    static inline void dp_name_thread(const char *name) {
        pthread_setname_np(pthread_self(), name);   /* top -H / perf --sort comm */
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
    uint64_t dp_now_ms() noexcept nogil
    void dp_name_thread(const char *name) noexcept nogil
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
    DP_TAG = 16                 # AEAD tag (wire.AEAD_TAG_SIZE)
    DP_OVERHEAD = 32
    DP_MAX_RX = 4               # receive keys per peer (current, previous, pending + spare)
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

if _dp_wire.DATA_HEADER_SIZE != DP_HDR or _dp_wire.AEAD_TAG_SIZE != DP_TAG:
    raise ImportError("enclave.proto.wire DATA header / tag sizes differ from the fast path's")
cdef uint8_t DP_MSG_DATA = _dp_wire.MSG_DATA
cdef uint64_t DP_DEFAULT_LIMIT = _dp_timing.REJECT_AFTER_MESSAGES


ctypedef struct dp_txkey:
    int kind
    void *state
    uint32_t remote_index
    uint64_t next               # next counter (tx thread only)
    uint64_t limit              # counters >= limit are never used

ctypedef struct dp_rxkey:
    int kind
    void *state
    uint32_t local_index
    int32_t slot
    int current                 # pairs with the tx key: may move the peer's address
    int notified                # FIRST_RX sent
    uint64_t frames             # authentic packets (rx thread only)
    rw_window win

ctypedef struct dp_peer:        # inside a snapshot: immutable once published
    int active
    int bridging
    int via_python
    uint64_t mac
    dp_txkey *tx

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
    uint64_t spoofed
    uint64_t runt
    uint64_t roamed
    uint64_t pad

ctypedef struct dp_txc:
    uint64_t frames
    uint64_t bytes
    uint64_t key_limit
    uint64_t no_key
    uint64_t no_addr
    uint64_t send_errors
    uint64_t via_python
    uint64_t pad

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
    uint64_t pad[5]

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
    uint64_t pad[3]

ctypedef struct dp_state:
    int tap_fd
    int udp_fd
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
    void *snap
    uint64_t gen
    uint64_t seen[2]            # per thread: generation in use, or DP_QUIESCENT
    pthread_mutex_t mt_lock
    mt_table mt
    dp_addr *addrs
    dp_rxc *rxc
    dp_txc *txc
    dp_grx grx
    dp_gtx gtx


# --- AEAD with the key's raw state (the AeadKey object is kept alive by Python) --------------

cdef inline int dp_seal(int kind, void *state, uint8_t *hdr, const uint8_t *src, size_t n,
                        uint64_t counter) noexcept nogil:
    """Encrypt src[0:n] into hdr + 16 (may be the same bytes), tag after it; AD = hdr[0:16]."""
    cdef unsigned char nonce[_NONCE_BYTES]
    cdef uint8_t *c = hdr + DP_HDR
    fp_nonce(nonce, counter)
    if kind == FP_AES256GCM:
        return _na.aes_encrypt_afternm(c, c + n, NULL, src, n, hdr, DP_HDR, NULL, nonce, state)
    return _na.chacha_encrypt(c, c + n, NULL, src, n, hdr, DP_HDR, NULL, nonce,
                              <const unsigned char *>state)


cdef inline int dp_open(int kind, void *state, uint8_t *pkt, size_t clen,
                        uint64_t counter) noexcept nogil:
    """Authenticate + decrypt pkt[16:16+clen] in place (clen includes the tag); 0 if authentic."""
    cdef unsigned char nonce[_NONCE_BYTES]
    cdef uint8_t *p = pkt + DP_HDR
    cdef size_t m
    if clen < DP_TAG:
        return -1
    m = clen - DP_TAG
    fp_nonce(nonce, counter)
    if kind == FP_AES256GCM:
        return _na.aes_decrypt_afternm(p, NULL, p, m, p + m, pkt, DP_HDR, nonce, state)
    return _na.chacha_decrypt(p, NULL, p, m, p + m, pkt, DP_HDR, nonce,
                              <const unsigned char *>state)


cdef inline void dp_header(uint8_t *h, uint32_t receiver, uint64_t counter) noexcept nogil:
    h[0] = DP_MSG_DATA
    h[1] = 0
    h[2] = 0
    h[3] = 0
    dp_put_le32(h + 4, receiver)
    dp_put_le64(h + 8, counter)


# --- epochs -----------------------------------------------------------------------------------

cdef inline dp_snap *dp_enter(dp_state *st, int t) noexcept nogil:
    dp_store_u64(&st.seen[t], dp_load_u64(&st.gen))
    return <dp_snap *>dp_load_ptr(&st.snap)


cdef inline void dp_leave(dp_state *st, int t) noexcept nogil:
    dp_store_u64(&st.seen[t], <uint64_t>DP_QUIESCENT)


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


# --- punt ---------------------------------------------------------------------------------------

cdef int dp_punt(dp_state *st, uint8_t *pbuf, int kind, const sockaddr_storage *sa,
                 int32_t slot, uint32_t index, const uint8_t *pkt, size_t n) noexcept nogil:
    """Send one punt message (header drawn at the top); pbuf has DP_PUNT_HDR + n bytes."""
    cdef const uint8_t *raw = <const uint8_t *>sa
    memset(pbuf, 0, DP_PUNT_HDR)
    pbuf[0] = <uint8_t>kind
    if sa != NULL and sa.ss_family == AF_INET:
        pbuf[1] = 4
        pbuf[2] = raw[2]
        pbuf[3] = raw[3]
        memcpy(pbuf + 12, raw + 4, 4)
    elif sa != NULL and sa.ss_family == AF_INET6:
        pbuf[1] = 6
        pbuf[2] = raw[2]
        pbuf[3] = raw[3]
        memcpy(pbuf + 12, raw + 8, 16)
    dp_put_le32(pbuf + 4, <uint32_t>slot)
    dp_put_le32(pbuf + 8, index)
    if n:
        memcpy(pbuf + DP_PUNT_HDR, pkt, n)
    if dp_send_dgram(st.punt_fd, pbuf, DP_PUNT_HDR + n) < 0:
        return -1
    return 0


cdef inline bint dp_same_addr(const sockaddr_storage *a, socklen_t alen,
                              const sockaddr_storage *b) noexcept nogil:
    cdef const uint8_t *x = <const uint8_t *>a
    cdef const uint8_t *y = <const uint8_t *>b
    if alen == 0 or a.ss_family != b.ss_family:
        return 0
    if a.ss_family == AF_INET:
        return memcmp(x + 2, y + 2, 6) == 0
    return memcmp(x + 2, y + 2, 2) == 0 and memcmp(x + 8, y + 8, 16) == 0


# --- ICMP "too big" back to the TAP ------------------------------------------------------------

cdef int dp_icmp_too_big(dp_state *st, const uint8_t *f, size_t flen) noexcept nogil:
    """Answer an oversized IPv4 DF / IPv6 frame with ICMP frag-needed / packet-too-big.

    The reply pretends to come from the frame's destination (MACs and IPs swapped) and names
    the data plane's MTU. Returns 1 if written.
    """
    cdef uint8_t out[10 + 14 + 40 + 8 + 1240]
    cdef uint8_t *e = out + 10
    cdef uint8_t *ip = e + 14
    cdef uint8_t *ic
    cdef const uint8_t *oip = f + 14
    cdef size_t q, total
    cdef uint32_t et, ihl
    cdef uint64_t acc
    if flen < 14 + 40:
        return 0
    et = (<uint32_t>f[12] << 8) | f[13]
    memset(out, 0, 10)
    memcpy(e, f + 6, 6)
    memcpy(e + 6, f, 6)
    if et == FO_ETH_IPV4:
        ihl = (oip[0] & 0x0F) * 4
        if (oip[0] >> 4) != 4 or ihl < 20 or not (oip[6] & 0x40) or (fo_be16(oip + 6) & 0x1FFF):
            return 0
        if oip[9] == 1 and flen >= 14 + ihl + 1 and oip[ihl] not in (0, 8, 13, 15, 17):
            return 0                      # never answer an ICMP error with an error
        if oip[16] >= 224 or oip[12] == 0 and oip[13] == 0 and oip[14] == 0 and oip[15] == 0:
            return 0                      # multicast destination / unspecified source
        q = flen - 14
        if q > 548:
            q = 548
        e[12] = 0x08
        e[13] = 0x00
        memset(ip, 0, 20)
        ip[0] = 0x45
        fo_put_be16(ip + 2, 20 + 8 + q)
        ip[8] = 64
        ip[9] = 1
        memcpy(ip + 12, oip + 16, 4)
        memcpy(ip + 16, oip + 12, 4)
        fo_ipv4_csum(ip, 20)
        ic = ip + 20
        ic[0] = 3
        ic[1] = 4
        ic[2] = 0
        ic[3] = 0
        ic[4] = 0
        ic[5] = 0
        fo_put_be16(ic + 6, st.mtu)
        memcpy(ic + 8, oip, q)
        fo_put_host16(ic + 2, <uint16_t>~fo_csum_fold(fo_csum_add(ic, 8 + q, 0)))
        total = 14 + 20 + 8 + q
    elif et == FO_ETH_IPV6:
        if (oip[0] >> 4) != 6 or st.mtu < 1280:
            return 0
        if oip[6] == 58 and flen >= 14 + 41 and oip[40] < 128:
            return 0                      # ICMPv6 error message
        q = flen - 14
        if q > 1280 - 48:
            q = 1280 - 48
        e[12] = 0x86
        e[13] = 0xDD
        memset(ip, 0, 40)
        ip[0] = 0x60
        fo_put_be16(ip + 4, 8 + q)
        ip[6] = 58
        ip[7] = 64
        memcpy(ip + 8, oip + 24, 16)
        memcpy(ip + 24, oip + 8, 16)
        ic = ip + 40
        ic[0] = 2
        ic[1] = 0
        ic[2] = 0
        ic[3] = 0
        fo_put_be32(ic + 4, st.mtu)
        memcpy(ic + 8, oip, q)
        acc = fo_csum_add(ip + 8, 32, 0) + fo_net16(58) + fo_net16(<uint32_t>(8 + q))
        fo_put_host16(ic + 2, <uint16_t>~fo_csum_fold(fo_csum_add(ic, 8 + q, acc)))
        total = 14 + 40 + 8 + q
    else:
        return 0
    if st.vnet_hdr:
        return _c_write(st.tap_fd, out, total + 10) > 0
    return _c_write(st.tap_fd, e, total) > 0


# --- tx thread ---------------------------------------------------------------------------------

ctypedef struct dp_tx:
    uint8_t *rbuf
    uint8_t *buf
    uint8_t *pbuf
    udp_batch *ub
    size_t pos
    int n
    uint32_t off[DP_TX_ENTRIES]
    uint32_t len[DP_TX_ENTRIES]
    int32_t slot[DP_TX_ENTRIES]
    socklen_t dlen[DP_TX_ENTRIES]
    sockaddr_storage dst[DP_TX_ENTRIES]
    uint32_t moff[DP_TX_ENTRIES]
    uint32_t mlen[DP_TX_ENTRIES]
    int mfirst[DP_TX_ENTRIES]
    int mcount[DP_TX_ENTRIES]
    uint32_t segoff[FO_TSO_MAX_SEGS]
    uint32_t seglen[FO_TSO_MAX_SEGS]
    fo_tso tso


cdef int dp_build_msgs(dp_state *st, dp_tx *tx, int start) noexcept nogil:
    """Group entries start.. into messages (GSO runs when enabled); returns the count."""
    cdef int i, m = -1, closed = 1
    cdef uint32_t seg = 0
    for i in range(start, tx.n):
        if (st.udp_gso and not closed and tx.dlen[i] == tx.dlen[tx.mfirst[m]]
                and memcmp(&tx.dst[i], &tx.dst[tx.mfirst[m]], tx.dlen[i]) == 0
                and tx.off[i] == tx.moff[m] + tx.mlen[m] and tx.mcount[m] < FO_TSO_MAX_SEGS
                and tx.mlen[m] + tx.len[i] <= DP_GSO_MAX_BYTES and tx.len[i] <= seg):
            tx.mlen[m] += tx.len[i]
            tx.mcount[m] += 1
            if tx.len[i] < seg:
                closed = 1
            continue
        m += 1
        tx.moff[m] = tx.off[i]
        tx.mlen[m] = tx.len[i]
        tx.mfirst[m] = i
        tx.mcount[m] = 1
        seg = tx.len[i]
        closed = 0
    return m + 1


cdef void dp_tx_flush(dp_state *st, dp_tx *tx) noexcept nogil:
    cdef int nm, i, k, chunk, r, err, start = 0
    cdef int retry
    cdef pollfd p[2]
    while start < tx.n:
        nm = dp_build_msgs(st, tx, start)
        i = 0
        retry = 0
        while i < nm and not st.stop:
            chunk = nm - i
            if chunk > UB_MAX:
                chunk = UB_MAX
            for k in range(chunk):
                tx.ub.dst[k] = &tx.dst[tx.mfirst[i + k]]
                tx.ub.dstlen[k] = tx.dlen[tx.mfirst[i + k]]
                tx.ub.gso[k] = (tx.len[tx.mfirst[i + k]] if tx.mcount[i + k] > 1 else 0)
                if tx.mcount[i + k] > 1:
                    st.gtx.gso_messages += 1
            st.gtx.sendmmsg_calls += 1
            r = ub_send(tx.ub, st.udp_fd, tx.buf, &tx.moff[i], &tx.mlen[i], chunk)
            if r > 0:
                i += r
                continue
            if r == 0:                    # socket buffer full: wait until it drains
                st.gtx.eagain_waits += 1
                p[0].fd = st.udp_fd
                p[0].events = POLLOUT
                p[1].fd = st.wake_fd
                p[1].events = POLLIN
                poll(p, 2, 100)
                continue
            err = -r
            if tx.mcount[i] > 1 and (err == EIO or err == EINVAL or err == EOPNOTSUPP):
                st.udp_gso = 0            # the kernel refused GSO: plain datagrams from now on
                st.gtx.gso_fallbacks += 1
                retry = 1
                break
            if err == ENOBUFS:
                st.gtx.eagain_waits += 1
                poll(NULL, 0, 1)
                continue
            st.txc[tx.slot[tx.mfirst[i]]].send_errors += tx.mcount[i]
            i += 1
        if retry:
            start = tx.mfirst[i]
            continue
        break
    tx.n = 0
    tx.pos = 0


cdef int dp_tx_emit(dp_state *st, dp_tx *tx, dp_snap *s, int32_t slot, const uint8_t *frame,
                    size_t flen, size_t rlen, bint last) noexcept nogil:
    """Encrypt one TAP read for peer `slot` into the batch. 0 ok, -1 dropped, -2 oversized.

    last: no other peer needs this read, so a vnet_hdr super-frame is segmented in place in
    the read buffer (fo_tso_inplace) and each segment sealed straight into its datagram;
    otherwise it is split into the batch (fo_tso_split) and sealed there in place.
    """
    cdef dp_peer *peer = &s.peers[slot]
    cdef dp_txkey *k = peer.tx
    cdef dp_addr *a = &st.addrs[slot]
    cdef int nseg, i
    cdef bint inplace = st.vnet_hdr and last
    cdef size_t need
    cdef uint32_t seglen
    cdef uint8_t *h
    cdef const uint8_t *src
    if not peer.active or k == NULL:
        st.txc[slot].no_key += 1
        return -1
    if st.vnet_hdr:
        need = rlen + FO_TSO_MAX_SEGS * (FO_MAX_HDR + DP_OVERHEAD)
    else:
        need = flen + DP_OVERHEAD
    if tx.n + FO_TSO_MAX_SEGS > DP_TX_ENTRIES or DP_TX_BUF - tx.pos < need:
        dp_tx_flush(st, tx)
    pthread_mutex_lock(&a.lock)
    tx.dlen[tx.n] = a.len
    if a.len:
        memcpy(&tx.dst[tx.n], &a.sa, a.len)
    pthread_mutex_unlock(&a.lock)
    if tx.dlen[tx.n] == 0 and not peer.via_python:
        st.txc[slot].no_addr += 1
        return -1
    if inplace:
        nseg = fo_tso_inplace(tx.rbuf, rlen, st.max_frame, FO_TSO_MAX_SEGS, &tx.tso)
    elif st.vnet_hdr:
        nseg = fo_tso_split(tx.rbuf, rlen, tx.buf, DP_TX_BUF, tx.pos, DP_HDR, DP_TAG,
                            st.max_frame, tx.segoff, tx.seglen, FO_TSO_MAX_SEGS)
    else:
        if flen > st.max_frame:
            return -2
        nseg = 1
    if nseg == FO_E_TOO_BIG:
        return -2
    if nseg < 0:
        st.gtx.offload_errors += 1
        return -1
    for i in range(nseg):
        if k.next >= k.limit:
            st.txc[slot].key_limit += nseg - i
            break
        if inplace:
            h = tx.buf + tx.pos
            src = fo_tso_next(&tx.tso, <uint32_t>i, &seglen)
        elif st.vnet_hdr:
            h = tx.buf + tx.segoff[i]
            seglen = tx.seglen[i]
            src = h + DP_HDR
        else:
            h = tx.buf + tx.pos
            seglen = <uint32_t>flen
            src = frame
        dp_header(h, k.remote_index, k.next)
        dp_seal(k.kind, k.state, h, src, seglen, k.next)
        k.next += 1
        st.txc[slot].frames += 1
        st.txc[slot].bytes += seglen
        if peer.via_python:
            st.txc[slot].via_python += 1
            if dp_punt(st, tx.pbuf, DP_PUNT_TX, NULL, slot, 0, h, seglen + DP_OVERHEAD) < 0:
                st.gtx.punt_dropped += 1
            continue
        if i > 0:
            tx.dlen[tx.n] = tx.dlen[tx.n - 1]
            memcpy(&tx.dst[tx.n], &tx.dst[tx.n - 1], tx.dlen[tx.n])
        tx.off[tx.n] = <uint32_t>(h - tx.buf)
        tx.len[tx.n] = seglen + DP_OVERHEAD
        tx.slot[tx.n] = slot
        tx.n += 1
        tx.pos = <size_t>(h - tx.buf) + seglen + DP_OVERHEAD
    return 0


cdef void dp_tx_frame(dp_state *st, dp_tx *tx, dp_snap *s, size_t rlen,
                      uint64_t now) noexcept nogil:
    cdef const uint8_t *f = tx.rbuf + (FO_VNET_HDR_LEN if st.vnet_hdr else 0)
    cdef size_t flen
    cdef int32_t dest
    cdef int i, r = 0
    if st.vnet_hdr:
        if rlen < FO_VNET_HDR_LEN:
            st.gtx.runt += 1
            return
        flen = rlen - FO_VNET_HDR_LEN
    else:
        flen = rlen
    pthread_mutex_lock(&st.mt_lock)
    dest = mt_lookup(&st.mt, f, flen, now)
    pthread_mutex_unlock(&st.mt_lock)
    if dest == MT_DROP:
        st.gtx.runt += 1
        return
    if dest >= 0 and dest < st.max_peers and s.peers[dest].active:
        r = dp_tx_emit(st, tx, s, dest, f, flen, rlen, 1)
    elif s.nflood == 0:
        st.gtx.no_peer += 1
        return
    else:
        st.gtx.flooded += 1
        for i in range(s.nflood):
            r = dp_tx_emit(st, tx, s, s.flood[i], f, flen, rlen, i + 1 == s.nflood)
            if r == -2:
                break
    if r == -2:
        st.gtx.oversize += 1
        if dp_icmp_too_big(st, f, flen):
            st.gtx.icmp_sent += 1


cdef void dp_tx_loop(dp_state *st) noexcept nogil:
    cdef dp_tx *tx = <dp_tx *>calloc(1, sizeof(dp_tx))
    cdef pollfd p[2]
    cdef dp_snap *s
    cdef ssize_t r
    cdef int reads, more = 0
    cdef uint64_t now
    if tx == NULL:
        return
    dp_name_thread("enclave-dp-tx")
    tx.rbuf = <uint8_t *>malloc(DP_RBUF)
    tx.buf = <uint8_t *>malloc(DP_TX_BUF)
    tx.pbuf = <uint8_t *>malloc(DP_RBUF + DP_PUNT_HDR + DP_OVERHEAD)
    if posix_memalign(<void **>&tx.ub, 64, sizeof(udp_batch)) != 0:
        tx.ub = NULL
    if tx.rbuf == NULL or tx.buf == NULL or tx.pbuf == NULL or tx.ub == NULL:
        st.stop = 1
    else:
        memset(tx.ub, 0, sizeof(udp_batch))
    while not st.stop:
        if not more:
            dp_leave(st, 0)
            p[0].fd = st.tap_fd
            p[0].events = POLLIN
            p[0].revents = 0
            p[1].fd = st.wake_fd
            p[1].events = POLLIN
            p[1].revents = 0
            if poll(p, 2, 1000) <= 0:
                continue
            if p[1].revents:
                break
        s = dp_enter(st, 0)
        st.gtx.rounds += 1
        now = dp_now_ms()
        more = 0
        reads = 0
        while reads < DP_TX_READS:
            r = _c_read(st.tap_fd, tx.rbuf, DP_RBUF)
            if r <= 0:
                break
            reads += 1
            st.gtx.tap_reads += 1
            dp_tx_frame(st, tx, s, <size_t>r, now)
            if tx.n >= st.tx_flush_frames or tx.pos >= st.tx_flush_bytes:
                dp_tx_flush(st, tx)
        if reads == DP_TX_READS:
            more = 1
        dp_tx_flush(st, tx)
    dp_leave(st, 0)
    free(tx.rbuf)
    free(tx.buf)
    free(tx.pbuf)
    free(tx.ub)
    free(tx)


# --- rx thread ---------------------------------------------------------------------------------

ctypedef struct dp_rx:
    uint8_t *buf                # nslots * slotsize
    uint8_t *ibuf               # one injected message
    uint8_t *pbuf
    size_t slotsize
    int nslots
    udp_batch *ub
    uint32_t offsets[UB_MAX]
    uint32_t sizes[UB_MAX]
    uint32_t lengths[UB_MAX]
    int nf                      # frames queued for the TAP
    uint32_t foff[FO_GRO_MAX_FRAMES]
    uint32_t flen[FO_GRO_MAX_FRAMES]
    iovec iov[FO_GRO_MAX_FRAMES]     # TAP writes (fo_gro_iov): frames / payloads in place
    int wcnt[FO_GRO_MAX_FRAMES]      # iovecs per write


cdef void dp_tap_write(dp_state *st, const uint8_t *p, size_t n) noexcept nogil:
    if _c_write(st.tap_fd, p, n) < 0:
        st.grx.tap_write_errors += 1
    else:
        st.grx.tap_writes += 1


cdef void dp_rx_flush(dp_state *st, dp_rx *rx) noexcept nogil:
    """Write the queued frames (frame i at rx.buf + foff[i] + 16) to the TAP."""
    cdef int i, k, m = 0
    cdef uint8_t *f
    if rx.nf == 0:
        return
    if st.tap_gro:
        k = fo_gro_iov(rx.buf, rx.foff, rx.flen, rx.nf, DP_HDR, rx.iov, rx.wcnt, 0)
        if k >= 0:
            for i in range(k):
                if writev(st.tap_fd, &rx.iov[m], rx.wcnt[i]) < 0:
                    st.grx.tap_write_errors += 1
                else:
                    st.grx.tap_writes += 1
                m += rx.wcnt[i]
            rx.nf = 0
            return
    for i in range(rx.nf):
        f = rx.buf + rx.foff[i] + DP_HDR
        if st.vnet_hdr:
            memset(f - FO_VNET_HDR_LEN, 0, FO_VNET_HDR_LEN)
            dp_tap_write(st, f - FO_VNET_HDR_LEN, rx.flen[i] + FO_VNET_HDR_LEN)
        else:
            dp_tap_write(st, f, rx.flen[i])
    rx.nf = 0


cdef int dp_rx_packet(dp_state *st, dp_rx *rx, dp_snap *s, uint8_t *pkt, size_t n,
                      const sockaddr_storage *sa, bint injected, uint64_t now) noexcept nogil:
    """One datagram: punt, drop, or decrypt in place and queue its frame. 1 if queued."""
    cdef dp_rxkey *k
    cdef dp_addr *a
    cdef uint64_t counter
    cdef int32_t slot
    cdef bint newest
    cdef uint8_t *f
    cdef size_t flen
    if n < DP_HDR or pkt[0] != DP_MSG_DATA:
        st.grx.punted += 1
        if dp_punt(st, rx.pbuf, DP_PUNT_DATAGRAM, sa, -1, 0, pkt, n) < 0:
            st.grx.punt_dropped += 1
        return 0
    if pkt[1] or pkt[2] or pkt[3]:
        st.grx.malformed += 1
        return 0
    k = dp_find(s, dp_le32(pkt + 4))
    if k == NULL:
        st.grx.unknown_index += 1
        st.grx.punted += 1
        if dp_punt(st, rx.pbuf, DP_PUNT_DATAGRAM, sa, -1, 0, pkt, n) < 0:
            st.grx.punt_dropped += 1
        return 0
    slot = k.slot
    if n < DP_HDR + DP_ETH + DP_TAG:
        st.rxc[slot].runt += 1
        return 0
    counter = dp_le64(pkt + 8)
    if not rw_check(&k.win, counter):
        st.rxc[slot].replay += 1
        return 0
    newest = k.frames == 0 or counter > k.win.last
    if dp_open(k.kind, k.state, pkt, n - DP_HDR, counter) != 0:
        st.rxc[slot].decrypt_fail += 1
        return 0
    if not rw_update(&k.win, counter):
        st.rxc[slot].replay += 1
        return 0
    k.frames += 1
    if not k.notified:
        k.notified = 1
        if dp_punt(st, rx.pbuf, DP_PUNT_FIRST_RX, NULL, slot, k.local_index, NULL, 0) < 0:
            st.grx.punt_dropped += 1
    f = pkt + DP_HDR
    flen = n - DP_OVERHEAD
    if (f[6] & 1) or (not s.peers[slot].bridging and mt_mac(f + 6) != s.peers[slot].mac):
        st.rxc[slot].spoofed += 1
        return 0
    if k.current and newest and not injected and sa != NULL:
        a = &st.addrs[slot]
        pthread_mutex_lock(&a.lock)
        if not dp_same_addr(&a.sa, a.len, sa):
            if sa.ss_family == AF_INET:
                a.len = 16
            else:
                a.len = 28
            memcpy(&a.sa, sa, a.len)
            pthread_mutex_unlock(&a.lock)
            st.rxc[slot].roamed += 1
            if dp_punt(st, rx.pbuf, DP_PUNT_ROAMED, sa, slot, k.local_index, NULL, 0) < 0:
                st.grx.punt_dropped += 1
        else:
            pthread_mutex_unlock(&a.lock)
    pthread_mutex_lock(&st.mt_lock)
    mt_learn(&st.mt, f, flen, slot, now)
    pthread_mutex_unlock(&st.mt_lock)
    st.rxc[slot].frames += 1
    st.rxc[slot].bytes += flen
    if rx.nf == FO_GRO_MAX_FRAMES:
        dp_rx_flush(st, rx)
    rx.foff[rx.nf] = <uint32_t>(pkt - rx.buf)
    rx.flen[rx.nf] = <uint32_t>flen
    rx.nf += 1
    return 1


cdef void dp_rx_loop(dp_state *st) noexcept nogil:
    cdef dp_rx *rx = <dp_rx *>calloc(1, sizeof(dp_rx))
    cdef pollfd p[3]
    cdef dp_snap *s
    cdef int i, r, trunc, m
    cdef ssize_t got
    cdef size_t seg, off, n
    cdef uint64_t now
    cdef int more = 0
    cdef int nb
    if rx == NULL:
        return
    dp_name_thread("enclave-dp-rx")
    if st.udp_gro:
        rx.nslots = 16
        rx.slotsize = 65536
    else:
        rx.nslots = UB_MAX
        rx.slotsize = ((st.max_frame + DP_OVERHEAD + 64 + 63) // 64) * 64
        if rx.slotsize < 2048:
            rx.slotsize = 2048
    # slot nslots is the injected-packet slot: frames queued from it live in the same buffer
    rx.buf = <uint8_t *>malloc(rx.slotsize * (rx.nslots + 1))
    rx.ibuf = <uint8_t *>malloc(65536 + DP_PUNT_HDR)
    rx.pbuf = <uint8_t *>malloc(65536 + DP_PUNT_HDR)
    if posix_memalign(<void **>&rx.ub, 64, sizeof(udp_batch)) != 0:
        rx.ub = NULL
    if rx.buf == NULL or rx.ibuf == NULL or rx.pbuf == NULL or rx.ub == NULL:
        st.stop = 1
    else:
        memset(rx.ub, 0, sizeof(udp_batch))
    nb = st.rx_batch if 0 < st.rx_batch < rx.nslots else rx.nslots
    for i in range(rx.nslots):
        rx.offsets[i] = <uint32_t>(i * rx.slotsize)
        rx.sizes[i] = <uint32_t>rx.slotsize
    while not st.stop:
        if not more:
            dp_leave(st, 1)
            p[0].fd = st.udp_fd
            p[0].events = POLLIN
            p[0].revents = 0
            p[1].fd = st.wake_fd
            p[1].events = POLLIN
            p[1].revents = 0
            p[2].fd = st.punt_fd
            p[2].events = POLLIN
            p[2].revents = 0
            if poll(p, 3, 1000) <= 0:
                continue
            if p[1].revents:
                break
        if more:                          # no poll this round: look for injected packets
            p[2].revents = POLLIN if (st.grx.rounds & 7) == 0 else 0   # every 8th round
        more = 0
        s = dp_enter(st, 1)
        st.grx.rounds += 1
        now = dp_now_ms()
        # packets Python injects (TCP / relay paths), one at a time through the spare slot
        for m in range(DP_RX_INJECT if p[2].revents else 0):
            got = dp_recv_dgram(st.punt_fd, rx.ibuf, 65536 + DP_PUNT_HDR, &trunc)
            if got < 0:
                break
            if trunc or got < DP_PUNT_HDR or rx.ibuf[0] != DP_PUNT_INJECT or \
                    <size_t>got - DP_PUNT_HDR > rx.slotsize:
                st.grx.malformed += 1
                continue
            st.grx.injected += 1
            n = <size_t>got - DP_PUNT_HDR
            memcpy(rx.buf + rx.nslots * rx.slotsize, rx.ibuf + DP_PUNT_HDR, n)
            dp_rx_packet(st, rx, s, rx.buf + rx.nslots * rx.slotsize, n, NULL, 1, now)
            dp_rx_flush(st, rx)
        r = ub_recv(rx.ub, st.udp_fd, rx.buf, rx.offsets, rx.sizes, rx.lengths, nb)
        if r == nb:
            more = 1
        for i in range(r if r > 0 else 0):
            st.grx.datagrams += 1
            if rx.ub.trunc[i]:
                st.grx.truncated += 1
                continue
            seg = rx.ub.gso[i]
            n = rx.lengths[i]
            if seg == 0 or seg >= n:
                dp_rx_packet(st, rx, s, rx.buf + rx.offsets[i], n, &rx.ub.addrs[i], 0, now)
                continue
            st.grx.gro_datagrams += 1
            off = 0
            while off < n:
                dp_rx_packet(st, rx, s, rx.buf + rx.offsets[i] + off,
                             seg if n - off > seg else n - off, &rx.ub.addrs[i], 0, now)
                off += seg
        dp_rx_flush(st, rx)
    dp_leave(st, 1)
    free(rx.buf)
    free(rx.ibuf)
    free(rx.pbuf)
    free(rx.ub)
    free(rx)


# --- Python side ----------------------------------------------------------------------------------

@cython.final
cdef class _TxKey:
    cdef AeadKey key
    cdef dp_txkey *c
    cdef bytes digest

    def __dealloc__(self):
        free(self.c)
        self.c = NULL


@cython.final
cdef class _RxKey:
    cdef AeadKey key
    cdef dp_rxkey *c
    cdef bytes digest

    def __dealloc__(self):
        free(self.c)
        self.c = NULL


cdef void dp_snap_free(dp_snap *s) noexcept nogil:
    if s != NULL:
        free(s.peers)
        free(s.flood)
        free(s.idx)
        free(s)


def _digest(cipher: str, key) -> bytes:
    return _dp_hashlib.blake2b(bytes(key), digest_size=16, person=cipher.encode()[:16]).digest()


def _cipher_name(cipher) -> str:
    if isinstance(cipher, str):
        return cipher
    name = {int(_dp_wire.Cipher.AES256_GCM): "aes256gcm",
            int(_dp_wire.Cipher.CHACHA20_POLY1305): "chacha20poly1305"}.get(int(cipher))
    if name is None:
        raise ValueError(f"unknown cipher {cipher!r}")
    return name


@cython.final
cdef class DataPlane:
    """The compiled data plane over an open TAP fd and UDP socket fd (both non-blocking).

    Peers live in slots 0..max_peers-1; Python installs/removes sessions, the two native
    threads (start/stop) do everything per frame. Datagrams that are not DATA for a known
    receiver index, and notices, arrive on ``punt_socket`` (format at the top of
    _fp_loops.pxi); DATA received over other paths goes back in with ``inject``.
    """

    cdef dp_state *st
    cdef readonly object punt_socket
    cdef object _c_sock
    cdef int _wake
    cdef list _threads
    cdef dict _slots             # slot -> {"tx": _TxKey | None, "rx": {index: _RxKey}, ...}
    cdef list _retired           # [(generation, snapshot address, [keys])]
    cdef readonly int max_peers
    cdef readonly int mtu

    def __cinit__(self, int tap_fd, int udp_fd, *, bint vnet_hdr=False, bint tap_gro=False,
                  bint udp_gso=False, bint udp_gro=False, int mtu=1406, int max_peers=256,
                  int mac_capacity=4096, uint64_t mac_max_age_ms=300_000):
        cdef int i
        cdef uint64_t nb = 16
        self.st = NULL
        self._wake = -1
        if tap_fd < 0 or udp_fd < 0:
            raise ValueError("tap_fd and udp_fd must be open file descriptors")
        if not 68 <= mtu <= 65535 - 14 - DP_OVERHEAD - 48:
            raise ValueError(f"mtu {mtu} out of range")
        if not 1 <= max_peers <= 65536:
            raise ValueError("max_peers must be 1..65536")
        if tap_gro and not vnet_hdr:
            raise ValueError("tap_gro needs a vnet_hdr TAP")
        if mac_capacity < 16 or mac_capacity > (1 << 24):
            raise ValueError("mac_capacity must be 16..2**24")
        self.st = <dp_state *>calloc(1, sizeof(dp_state))
        if self.st == NULL:
            raise MemoryError()
        self.st.tap_fd = tap_fd
        self.st.udp_fd = udp_fd
        self.st.vnet_hdr = vnet_hdr
        self.st.tap_gro = tap_gro
        self.st.udp_gso = udp_gso
        self.st.udp_gro = udp_gro
        self.st.mtu = mtu
        self.st.max_frame = mtu + DP_ETH
        self.st.max_peers = max_peers
        self.st.tx_flush_bytes = DP_TX_BUF
        self.st.tx_flush_frames = DP_TX_ENTRIES
        self.st.rx_batch = 0
        self.st.seen[0] = <uint64_t>DP_QUIESCENT
        self.st.seen[1] = <uint64_t>DP_QUIESCENT
        pthread_mutex_init(&self.st.mt_lock, NULL)
        while nb < <uint64_t>mac_capacity:
            nb <<= 1
        self.st.mt.entries = <mt_entry *>calloc(nb, sizeof(mt_entry))
        self.st.mt.mask = nb - 1
        self.st.mt.max_age = mac_max_age_ms
        self.st.mt.seed = int.from_bytes(_dp_os.urandom(8), "little")
        self.st.addrs = <dp_addr *>calloc(max_peers, sizeof(dp_addr))
        self.st.rxc = <dp_rxc *>calloc(max_peers, sizeof(dp_rxc))
        self.st.txc = <dp_txc *>calloc(max_peers, sizeof(dp_txc))
        if (self.st.mt.entries == NULL or self.st.addrs == NULL or self.st.rxc == NULL
                or self.st.txc == NULL):
            raise MemoryError()
        for i in range(max_peers):
            pthread_mutex_init(&self.st.addrs[i].lock, NULL)
        self.max_peers = max_peers
        self.mtu = mtu
        self._slots = {}
        self._retired = []
        self._threads = []
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
        self._publish([])

    def __dealloc__(self):
        cdef int i
        if self.st == NULL:
            return
        # threads hold a reference to self while running, so none is running here
        dp_snap_free(<dp_snap *>self.st.snap)
        for _gen, addr, _keys in (self._retired or []):
            dp_snap_free(<dp_snap *><size_t>addr)
        free(self.st.mt.entries)
        if self.st.addrs != NULL:
            for i in range(self.st.max_peers):
                pthread_mutex_destroy(&self.st.addrs[i].lock)
        free(self.st.addrs)
        free(self.st.rxc)
        free(self.st.txc)
        pthread_mutex_destroy(&self.st.mt_lock)
        free(self.st)
        self.st = NULL
        if self._wake >= 0:
            _dp_os.close(self._wake)
            self._wake = -1

    def tune(self, *, tx_flush_bytes: int | None = None, tx_flush_frames: int | None = None,
             rx_batch: int | None = None) -> dict:
        """Batching knobs (latency vs syscalls per frame); only while stopped. Returns them.

        tx_flush_bytes / tx_flush_frames: the tx loop sends its batch once this much is
        queued, else when the TAP has nothing more to read (default: the whole batch buffer).
        rx_batch: datagrams (UDP_GRO buffers) per recvmmsg, 0 = all receive slots.
        """
        if self._threads:
            raise RuntimeError("tune() while the loops run")
        if tx_flush_bytes is not None:
            if not 1 <= tx_flush_bytes <= DP_TX_BUF:
                raise ValueError(f"tx_flush_bytes must be 1..{DP_TX_BUF}")
            self.st.tx_flush_bytes = <uint32_t>tx_flush_bytes
        if tx_flush_frames is not None:
            if not 1 <= tx_flush_frames <= DP_TX_ENTRIES:
                raise ValueError(f"tx_flush_frames must be 1..{DP_TX_ENTRIES}")
            self.st.tx_flush_frames = tx_flush_frames
        if rx_batch is not None:
            if not 0 <= rx_batch <= UB_MAX:
                raise ValueError(f"rx_batch must be 0..{UB_MAX}")
            self.st.rx_batch = rx_batch
        return {"tx_flush_bytes": self.st.tx_flush_bytes,
                "tx_flush_frames": self.st.tx_flush_frames, "rx_batch": self.st.rx_batch}

    # -- snapshots ------------------------------------------------------------------------------

    cdef void _publish(self, list dropped) except *:
        """Build a snapshot of self._slots, publish it, retire the old one with `dropped`."""
        cdef dp_snap *s = <dp_snap *>calloc(1, sizeof(dp_snap))
        cdef uint32_t cap = 16
        cdef uint32_t h
        cdef int nrx = 0
        cdef int nflood = 0
        cdef _TxKey tk
        cdef _RxKey rk
        cdef dp_peer *p
        cdef uint64_t gen
        cdef void *old
        if s == NULL:
            raise MemoryError()
        for info in self._slots.values():
            nrx += len(info["rx"])
        while cap < <uint32_t>(2 * nrx + 2):
            cap <<= 1
        s.peers = <dp_peer *>calloc(self.st.max_peers, sizeof(dp_peer))
        s.flood = <int32_t *>calloc(self.st.max_peers, sizeof(int32_t))
        s.idx = <dp_idx *>calloc(cap, sizeof(dp_idx))
        if s.peers == NULL or s.flood == NULL or s.idx == NULL:
            dp_snap_free(s)
            raise MemoryError()
        s.idx_mask = cap - 1
        for slot in sorted(self._slots):
            info = self._slots[slot]
            p = &s.peers[<int>slot]
            p.active = 1
            p.bridging = info["bridging"]
            p.via_python = info["via_python"]
            p.mac = int.from_bytes(info["mac"], "big")
            if info["tx"] is not None:
                tk = info["tx"]
                p.tx = tk.c
                s.flood[nflood] = <int32_t>slot
                nflood += 1
            for index, rko in info["rx"].items():
                rk = rko
                h = (<uint32_t>index * <uint32_t>0x9E3779B1) & s.idx_mask
                while s.idx[h].index != 0:
                    h = (h + 1) & s.idx_mask
                s.idx[h].index = <uint32_t>index
                s.idx[h].rx = rk.c
        s.nflood = nflood
        old = self.st.snap
        gen = self.st.gen
        dp_store_ptr(&self.st.snap, <void *>s)
        dp_store_u64(&self.st.gen, gen + 1)
        if old != NULL or dropped:
            self._retired.append((gen, <size_t>old, dropped))
        self._reclaim()

    cdef void _reclaim(self) except *:
        cdef uint64_t a = dp_load_u64(&self.st.seen[0])
        cdef uint64_t b = dp_load_u64(&self.st.seen[1])
        keep = []
        for gen, addr, keys in self._retired:
            if ((a == <uint64_t>DP_QUIESCENT or a > <uint64_t>gen)
                    and (b == <uint64_t>DP_QUIESCENT or b > <uint64_t>gen)):
                dp_snap_free(<dp_snap *><size_t>addr)
            else:
                keep.append((gen, addr, keys))
        self._retired = keep

    def reclaim(self) -> int:
        """Free retired snapshots no thread can still use; returns how many remain."""
        self._reclaim()
        return len(self._retired)

    # -- sessions -------------------------------------------------------------------------------

    cdef int _check_slot(self, int slot) except -1:
        if not 0 <= slot < self.st.max_peers:
            raise ValueError(f"slot {slot} out of range 0..{self.st.max_peers - 1}")
        return 0

    cdef void _set_addr(self, int slot, object addr) except *:
        cdef bytes raw = b""
        cdef dp_addr *a = &self.st.addrs[slot]
        if addr is not None:
            host, port = addr
            if not 0 < int(port) < 65536:
                raise ValueError(f"bad port {port!r}")
            raw = _pack_sockaddr(str(host), int(port))
        pthread_mutex_lock(&a.lock)
        memset(&a.sa, 0, sizeof(sockaddr_storage))
        if raw:
            memcpy(&a.sa, <const char *>raw, len(raw))
        a.len = <socklen_t>len(raw)
        pthread_mutex_unlock(&a.lock)

    def install(self, int slot, peer_mac, bint allow_bridging, addr, tx, rx, *,
                tx_local_index=None, tx_limit=None, bint via_python=False) -> None:
        """Install or replace peer `slot`'s session atomically.

        peer_mac: the peer's certified MAC (6 bytes). addr: (host, port) or None (keep the
        current address; a new slot starts without one). tx: (remote_index, key, cipher) or
        None; rx: [(local_index, key, cipher), ...] (at most DATAPLANE_MAX_RX_KEYS).
        tx_local_index: the local index of the session `tx` belongs to (its rx key may move
        the peer's address when a newer packet arrives from elsewhere). via_python: the path
        is not UDP: encrypted packets are punted (PUNT_TX) for Python to send.
        Keys whose index and key bytes are unchanged keep their counter / replay window.
        """
        cdef _TxKey tk
        cdef _RxKey rk
        cdef bytes mac
        cdef uint64_t limit = DP_DEFAULT_LIMIT if tx_limit is None else tx_limit
        self._check_slot(slot)
        mac = bytes(peer_mac)
        if len(mac) != 6 or mac[0] & 1:
            raise ValueError("peer_mac must be 6 bytes, unicast")
        rx = list(rx)
        if len(rx) > DP_MAX_RX:
            raise ValueError(f"at most {DP_MAX_RX} receive keys per peer")
        seen = set()
        for entry in rx:
            index = int(entry[0])
            if not 0 < index < 2**32 or index in seen:
                raise ValueError(f"bad or duplicate receive index {index!r}")
            seen.add(index)
            for other, oinfo in self._slots.items():
                if other != slot and index in oinfo["rx"]:
                    raise ValueError(f"receive index {index:#x} already used by slot {other}")
        old = self._slots.get(slot)
        dropped = []
        new_tx = None
        if tx is not None:
            rindex, key, cipher = tx
            cname = _cipher_name(cipher)
            if not 0 <= int(rindex) < 2**32:
                raise ValueError("bad remote index")
            dg = _digest(cname, key)
            if (old is not None and old["tx"] is not None
                    and (<_TxKey>old["tx"]).c.remote_index == int(rindex)
                    and (<_TxKey>old["tx"]).digest == dg):
                new_tx = old["tx"]
                (<_TxKey>new_tx).c.limit = limit
            else:
                tk = _TxKey.__new__(_TxKey)
                tk.key = AeadKey(cname, key)
                tk.digest = dg
                tk.c = <dp_txkey *>calloc(1, sizeof(dp_txkey))
                if tk.c == NULL:
                    raise MemoryError()
                tk.c.kind = tk.key.kind
                tk.c.state = tk.key.state
                tk.c.remote_index = <uint32_t>int(rindex)
                tk.c.limit = limit
                new_tx = tk
        new_rx = {}
        for entry in rx:
            index, key, cipher = int(entry[0]), entry[1], entry[2]
            cname = _cipher_name(cipher)
            dg = _digest(cname, key)
            prev = old["rx"].get(index) if old is not None else None
            if prev is not None and (<_RxKey>prev).digest == dg:
                rk = prev
            else:
                rk = _RxKey.__new__(_RxKey)
                rk.key = AeadKey(cname, key)
                rk.digest = dg
                rk.c = <dp_rxkey *>calloc(1, sizeof(dp_rxkey))
                if rk.c == NULL:
                    raise MemoryError()
                rk.c.kind = rk.key.kind
                rk.c.state = rk.key.state
                rk.c.local_index = <uint32_t>index
                rk.c.slot = slot
                rw_init(&rk.c.win, DP_DEFAULT_LIMIT)
            new_rx[index] = rk
        # The `current` flag is set only on keys not yet visible to the rx thread or left as
        # they were: a key that changes role gets the new flag before the snapshot is swapped
        # (an int store; the rx thread reads either value safely).
        for index, rko in new_rx.items():
            rk = rko
            rk.c.current = tx_local_index is not None and index == int(tx_local_index)
        if old is not None:
            if old["tx"] is not None and old["tx"] is not new_tx:
                dropped.append(old["tx"])
            for index, rko in old["rx"].items():
                if new_rx.get(index) is not rko:
                    dropped.append(rko)
        else:
            memset(&self.st.rxc[slot], 0, sizeof(dp_rxc))
            memset(&self.st.txc[slot], 0, sizeof(dp_txc))
            self._set_addr(slot, None)
        if addr is not None:
            self._set_addr(slot, addr)
        self._slots[slot] = {"mac": mac, "bridging": allow_bridging, "via_python": via_python,
                             "tx": new_tx, "rx": new_rx}
        self._publish(dropped)

    def remove(self, int slot) -> None:
        """Remove peer `slot` (its keys, address and learned MACs)."""
        self._check_slot(slot)
        old = self._slots.pop(slot, None)
        if old is None:
            return
        dropped = list(old["rx"].values())
        if old["tx"] is not None:
            dropped.append(old["tx"])
        self._publish(dropped)
        with nogil:
            pthread_mutex_lock(&self.st.mt_lock)
            mt_forget_slot(&self.st.mt, slot)
            pthread_mutex_unlock(&self.st.mt_lock)
        self._set_addr(slot, None)

    def set_addr(self, int slot, addr) -> None:
        """Point peer `slot`'s DATA packets at (host, port), or nowhere (None)."""
        self._check_slot(slot)
        self._set_addr(slot, addr)

    def get_addr(self, int slot):
        """The address DATA packets for `slot` go to, as (host, port), or None."""
        cdef dp_addr *a
        self._check_slot(slot)
        a = &self.st.addrs[slot]
        pthread_mutex_lock(&a.lock)
        raw = (<const char *>&a.sa)[:a.len] if a.len else b""
        pthread_mutex_unlock(&a.lock)
        return _unpack_sockaddr(raw) if raw else None

    def slots(self) -> list:
        return sorted(self._slots)

    # -- counters -------------------------------------------------------------------------------

    def counters(self, int slot) -> dict:
        """Per-peer counters (frames/bytes in and out, drops by reason, key usage)."""
        cdef dp_rxc r
        cdef dp_txc t
        cdef _TxKey tk
        self._check_slot(slot)
        r = self.st.rxc[slot]
        t = self.st.txc[slot]
        info = self._slots.get(slot)
        out = {
            "rx_frames": r.frames, "rx_bytes": r.bytes, "rx_replay": r.replay,
            "rx_decrypt_fail": r.decrypt_fail, "rx_spoofed": r.spoofed, "rx_runt": r.runt,
            "roamed": r.roamed,
            "tx_frames": t.frames, "tx_bytes": t.bytes, "tx_key_limit": t.key_limit,
            "tx_no_key": t.no_key, "tx_no_addr": t.no_addr, "tx_send_errors": t.send_errors,
            "tx_via_python": t.via_python,
        }
        if info is not None and info["tx"] is not None:
            tk = info["tx"]
            out["tx_counter"] = tk.c.next
        return out

    def global_counters(self) -> dict:
        cdef dp_grx r = self.st.grx
        cdef dp_gtx t = self.st.gtx
        return {
            "rx_datagrams": r.datagrams, "rx_punted": r.punted,
            "rx_punt_dropped": r.punt_dropped, "rx_unknown_index": r.unknown_index,
            "rx_malformed": r.malformed, "rx_truncated": r.truncated,
            "tap_writes": r.tap_writes, "tap_write_errors": r.tap_write_errors,
            "rx_gro_datagrams": r.gro_datagrams, "rx_injected": r.injected,
            "rx_rounds": r.rounds,
            "tap_reads": t.tap_reads, "tx_oversize": t.oversize, "icmp_sent": t.icmp_sent,
            "tx_flooded": t.flooded, "tx_no_peer": t.no_peer, "tx_runt": t.runt,
            "tx_offload_errors": t.offload_errors, "sendmmsg_calls": t.sendmmsg_calls,
            "gso_messages": t.gso_messages, "gso_fallbacks": t.gso_fallbacks,
            "tx_punt_dropped": t.punt_dropped, "tx_eagain_waits": t.eagain_waits,
            "tx_rounds": t.rounds,
            "udp_gso": bool(self.st.udp_gso), "udp_gro": bool(self.st.udp_gro),
            "vnet_hdr": bool(self.st.vnet_hdr), "tap_gro": bool(self.st.tap_gro),
        }

    def activity(self) -> list:
        """[(slot, local_index, rx_packets, tx_messages or None)] for every installed key:
        what Node.report_activity needs (tx_messages: counters used by the tx key that the
        session with this local index sends with)."""
        cdef _RxKey rk
        cdef _TxKey tk
        out = []
        for slot, info in self._slots.items():
            for index, rko in info["rx"].items():
                rk = rko
                sent = None
                if rk.c.current and info["tx"] is not None:
                    tk = info["tx"]
                    sent = tk.c.next
                out.append((slot, index, rk.c.frames, sent))
        return out

    # -- Python-originated traffic ----------------------------------------------------------------

    def inject(self, packet) -> None:
        """Hand a DATA packet that arrived over TCP / the relay to the rx thread."""
        hdr = bytearray(DP_PUNT_HDR)
        hdr[0] = DP_PUNT_INJECT
        self.punt_socket.send(bytes(hdr) + bytes(packet))

    # -- threads ----------------------------------------------------------------------------------

    def _run(self, int which) -> None:
        with nogil:
            if which == 0:
                dp_tx_loop(self.st)
            else:
                dp_rx_loop(self.st)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("data plane already started")
        self.st.stop = 0
        self._threads = [
            _dp_threading.Thread(target=self._run, args=(0,), name="enclave-dp-tx", daemon=True),
            _dp_threading.Thread(target=self._run, args=(1,), name="enclave-dp-rx", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Wake both loops and join them (they notice within one poll round)."""
        if not self._threads:
            return
        self.st.stop = 1
        _dp_os.eventfd_write(self._wake, 1)
        for t in self._threads:
            t.join(timeout)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"data-plane threads did not stop: {alive}")
        self._threads = []
        _dp_os.eventfd_read(self._wake)
        dp_store_u64(&self.st.seen[0], <uint64_t>DP_QUIESCENT)
        dp_store_u64(&self.st.seen[1], <uint64_t>DP_QUIESCENT)
        self._reclaim()

    def close(self) -> None:
        self.stop()
        self.punt_socket.close()
        self._c_sock.close()
