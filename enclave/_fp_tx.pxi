# The tx loop ("inside": TAP -> UDP), one native thread per worker, GIL released, no Python
# per frame. (included by _fastpath.pyx after _fp_icmp.pxi).
#
#   Outbound (inside -> outside), thread "tx" (enclave-dp-tx, enclave-dp-tx1, ...):
#     0. with N workers the TAP is multi-queue: worker k reads queue k only (st.tap_fd) and
#        sends on its own SO_REUSEPORT socket (st.udp_fd). The tun driver picks a frame's
#        queue by flow: the queue its reverse flow was last written to (automatic flow
#        steering), else its flow hash, so one flow is read by one worker
#     1. poll(TAP, wake); drain the TAP (up to DP_TX_READS reads per round)
#     2. L2 switch: mt_lookup(dst MAC) -> one peer slot, or flood to every peer with a tx key
#     3. size check: frame > mtu + 14 -> drop (+ ICMP "fragmentation needed" / ICMPv6 "packet
#        too big" written back to the TAP, so path-MTU discovery works)
#     4. vnet_hdr TAP: the (super-)frame is cut into segments <= mtu + 14. For the last (usually
#        only) peer, in place in the read buffer (fo_tso_inplace: each segment's headers are
#        written in front of its payload), so step 5 seals straight from there into the
#        datagram, no payload copy; for earlier peers of a flood, fo_tso_split copies them
#        into the batch buffer (16 bytes of headroom and tailroom each) to be sealed in place
#     5. per segment: counter from key.next (reserved per read with one atomic add, stop at
#        key.limit), DATA header, AEAD seal
#        (out of place: TAP read buffer -> batch buffer)
#     6. sendmmsg; consecutive equal-size datagrams to one address become one UDP GSO message
#        (UDP_SEGMENT, <= 64 segments); EAGAIN -> wait for POLLOUT; GSO refused -> fall back
#
#   With the AQM on (st.aqm, the default): step 1 reads the TAP eagerly into the aqm ring
#   (_fp_aqm.pxi: bytes-bounded, each read stamped with its CLOCK_MONOTONIC arrival), and
#   steps 2-6 take up to DP_AQM_BUDGET reads from the ring's head per round; CoDel decides
#   per read at dequeue (head drop, or CE on an ECN-capable packet). Small frames of flows
#   with nothing in the ring take the sparse lane instead (_fp_aqm.pxi), sealed and sent
#   first each round. Off: one read at a time straight from the read buffer, the backlog
#   stays in the tun ring.
#
#   Buffers (tx batch): the AEAD layout of _fp_aead.pxi, datagrams back to back so a GSO run
#   is one contiguous span:
#     | hdr 16 | ciphertext (frame) | tag 16 | hdr 16 | ciphertext | tag 16 | ...
#
#
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
    uint8_t punt[DP_TX_ENTRIES]     # 1: goes to Python in a TX batch (_fp_relaypath.pxi)
    int npunt
    socklen_t dlen[DP_TX_ENTRIES]
    sockaddr_storage dst[DP_TX_ENTRIES]
    uint32_t moff[DP_TX_ENTRIES]
    uint32_t mlen[DP_TX_ENTRIES]
    int mfirst[DP_TX_ENTRIES]
    int mcount[DP_TX_ENTRIES]
    uint32_t segoff[FO_TSO_MAX_SEGS]
    uint32_t seglen[FO_TSO_MAX_SEGS]
    fo_tso tso
    uint8_t *rown               # the read buffer (rbuf points at it, or at a ring entry)
    aqm_ring *q                 # NULL: AQM off
    codel_state cd


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
    if tx.npunt:                      # TCP / relay-over-TLS entries: TX batches to Python
        dp_rp_tx_punts(st, tx)
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
    cdef size_t need, ov, rh
    cdef uint32_t seglen
    cdef uint64_t base, ctr
    cdef uint8_t *h
    cdef const uint8_t *src
    if not peer.active or k == NULL:
        st.txc[slot].no_key += 1
        return -1
    ov = dp_overhead(k.kind)          # header + this key's tag (16; AEGIS-256: 32)
    rh = dp_rp_room(peer)             # relay header / batch length in front (_fp_relaypath)
    if st.vnet_hdr:
        need = rlen + FO_TSO_MAX_SEGS * (FO_MAX_HDR + ov + rh)
    else:
        need = flen + ov + rh
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
        nseg = fo_tso_split(tx.rbuf, rlen, tx.buf, DP_TX_BUF, tx.pos, DP_HDR + rh, ov - DP_HDR,
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
    # this read's counters, reserved at once: another worker's tx thread may be sealing for
    # the same peer (its counters interleave; the receiver's replay window takes them)
    base = dp_fetch_add_u64(&k.next, <uint64_t>nseg)
    for i in range(nseg):
        ctr = base + <uint64_t>i
        if ctr >= k.limit:
            st.txc[slot].key_limit += nseg - i
            break
        if inplace:
            h = tx.buf + tx.pos + rh
            src = fo_tso_next(&tx.tso, <uint32_t>i, &seglen)
        elif st.vnet_hdr:
            h = tx.buf + tx.segoff[i] + rh
            seglen = tx.seglen[i]
            src = h + DP_HDR
        else:
            h = tx.buf + tx.pos + rh
            seglen = <uint32_t>flen
            src = frame
        dp_header(h, k.remote_index, ctr)
        dp_seal(k.kind, k.state, h, src, seglen, ctr)
        st.txc[slot].frames += 1
        st.txc[slot].bytes += seglen
        if rh:
            dp_rp_prefix(st, peer, slot, h, seglen + ov)
        if i > 0:
            tx.dlen[tx.n] = tx.dlen[tx.n - 1]
            memcpy(&tx.dst[tx.n], &tx.dst[tx.n - 1], tx.dlen[tx.n])
        tx.off[tx.n] = <uint32_t>(h - rh - tx.buf)
        tx.len[tx.n] = seglen + ov + rh
        tx.slot[tx.n] = slot
        tx.punt[tx.n] = peer.via_python != 0
        tx.npunt += peer.via_python != 0
        tx.n += 1
        tx.pos = <size_t>(h - tx.buf) + seglen + ov
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
    pthread_mutex_lock(&st.main.mt_lock)
    dest = mt_lookup(&st.main.mt, f, flen, now)
    pthread_mutex_unlock(&st.main.mt_lock)
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


cdef int dp_tx_aqm_round(dp_state *st, dp_tx *tx, dp_snap *s, uint64_t now) noexcept nogil:
    """One round with the AQM: read the TAP into the ring, then seal up to DP_AQM_BUDGET reads
    from its head, CoDel deciding on each. 1 if there is more to do without waiting."""
    cdef aqm_ring *q = tx.q
    cdef aqm_entry *e
    cdef aqm_sparse *sp
    cdef uint8_t *room
    cdef ssize_t r
    cdef int reads = 0, done = 0
    cdef size_t vh = FO_VNET_HDR_LEN if st.vnet_hdr else 0
    cdef uint64_t t
    cdef bint full = 0
    while reads < DP_TX_READS:
        room = aqm_ring_room(q)
        if room == NULL:
            full = 1
            break
        r = _c_read(st.tap_fd, room, DP_RBUF)
        if r <= 0:
            break
        reads += 1
        st.gtx.tap_reads += 1
        aqm_enqueue(q, room, <uint32_t>r, vh, dp_now_ns())
    # the sparse lane first (small frames of flows with nothing in the ring), sent at once
    # so that they do not wait for a bulk batch's sealing either; no CoDel there: it holds
    # at most DP_AQM_SPARSE_SLOTS small frames, never a standing queue
    if q.sp_n > 0:
        t = dp_now_ns()
        while q.sp_n > 0:
            sp = aqm_sparse_pop(q)
            st.gtx.aqm_wait_us += (t - sp.t) // 1000 if t > sp.t else 0
            tx.rbuf = sp.data
            dp_tx_frame(st, tx, s, sp.len, now)
            if tx.n >= st.tx_flush_frames or tx.pos >= st.tx_flush_bytes:
                dp_tx_flush(st, tx)
        dp_tx_flush(st, tx)
    while q.n > 0 and done < DP_AQM_BUDGET:
        e = aqm_ring_pop(q)
        done += 1
        t = dp_now_ns()
        st.gtx.aqm_wait_us += (t - e.t) // 1000 if t > e.t else 0
        if codel_decide(&tx.cd, t - e.t if t > e.t else 0, t, q.n == 0):
            if e.len > vh and fp_ecn_mark(q.buf + e.off + vh, e.len - vh):
                st.gtx.aqm_marks += 1
            else:
                st.gtx.aqm_drops += 1
                continue
        tx.rbuf = q.buf + e.off
        dp_tx_frame(st, tx, s, e.len, now)
        if tx.n >= st.tx_flush_frames or tx.pos >= st.tx_flush_bytes:
            dp_tx_flush(st, tx)
    dp_tx_flush(st, tx)
    return q.n > 0 or q.sp_n > 0 or full or reads == DP_TX_READS


cdef void dp_tx_loop(dp_state *st) noexcept nogil:
    cdef dp_tx *tx = <dp_tx *>calloc(1, sizeof(dp_tx))
    cdef pollfd p[2]
    cdef dp_snap *s
    cdef ssize_t r
    cdef int reads, more = 0
    cdef uint64_t now
    if tx == NULL:
        return
    dp_name_worker("enclave-dp-tx", st.worker)
    tx.rown = <uint8_t *>malloc(DP_RBUF)
    tx.rbuf = tx.rown
    tx.buf = <uint8_t *>malloc(DP_TX_BUF)
    tx.pbuf = <uint8_t *>malloc(DP_RBUF + DP_PUNT_HDR + DP_MAX_OVERHEAD)
    if posix_memalign(<void **>&tx.ub, 64, sizeof(udp_batch)) != 0:
        tx.ub = NULL
    if st.aqm:
        tx.q = <aqm_ring *>calloc(1, sizeof(aqm_ring))
        if tx.q != NULL:
            tx.q.buf = <uint8_t *>malloc(DP_AQM_RING_BYTES + DP_RBUF + 64)
        codel_init(&tx.cd, st.aqm_target_ns, st.aqm_interval_ns)
    if (tx.rown == NULL or tx.buf == NULL or tx.pbuf == NULL or tx.ub == NULL
            or (st.aqm and (tx.q == NULL or tx.q.buf == NULL))):
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
        if tx.q != NULL:
            more = dp_tx_aqm_round(st, tx, s, now)
            continue
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
    if tx.q != NULL:
        free(tx.q.buf)
        free(tx.q)
    free(tx.rown)
    free(tx.buf)
    free(tx.pbuf)
    free(tx.ub)
    free(tx)
