# The rx loop ("outside": UDP -> TAP), one native thread per worker, GIL released, no Python
# per frame. (included by _fastpath.pyx after _fp_tx.pxi).
#
#   With N workers, worker k's rx thread (enclave-dp-rx, enclave-dp-rx1, ...) reads its own
#   SO_REUSEPORT socket, which the kernel picks by the datagram's 4-tuple hash: every packet
#   of one peer (one source address and port) reaches one worker, in order; peers spread over
#   the workers. It writes its frames to its own TAP queue (which also steers the reverse
#   flow's reads to that queue). Injected packets (TCP / relay paths) are worker 0's.
#
#   Inbound (outside -> inside), thread "rx":
#     1. poll(UDP, wake, punt); recvmmsg (UDP_GRO: one buffer may hold a run of datagrams,
#        cut by the gso_size cmsg); datagrams Python sent us through the punt socket (INJECT:
#        DATA that arrived over TCP or the relay) take the same path
#     2. anything not DATA for a known receiver index -> punted to Python (with its source)
#     3. rw_check -> AEAD open -> rw_update (the window moves only for authentic packets;
#        check and update under the key's lock when there are several workers: dp_rx_lock)
#     4. identity binding (fp_ident_check, _fp_ident.pxi): the frame's Ethernet source, and
#        its ARP / IPv4 / IPv6 source and Neighbour Advertisement target, must be what the
#        peer's certificate names (drops: rx_spoofed, rx_arp_spoofed, rx_ip_spoofed);
#        MAC learning, roaming (newest packet on the current key from a new address)
#     5. TAP write: vnet_hdr TAP with offloads -> fo_gro_iov coalesces same-flow TCP segments;
#        one writev per run: the first frame (headers patched, virtio header in its headroom)
#        and every later frame's payload where it was decrypted, no copy in user space
#   AQM (st.aqm): the socket receive buffer is the queue; each datagram's SO_TIMESTAMPNS
#   arrival gives its sojourn, and CoDel (_fp_aqm.pxi) marks CE on or drops an authentic
#   frame before step 5 when the queue stood above target for an interval; a datagram
#   holding one small frame is written at once (with the frames before it, in order) rather
#   than after the rest of the round is decrypted
#
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
    codel_state cd                   # the receive queue's CoDel (st.aqm)
    uint64_t arrival                 # this datagram's kernel arrival (realtime ns), 0 = none
    uint64_t rt_now                  # realtime ns when this datagram is handled
    uint64_t mono_now                # monotonic ns then (CoDel's clock)
    bint qempty                      # this datagram was the last one queued
    uint64_t lkey                    # the last (source MAC + 1, slot, now) this worker taught
    int32_t lslot                    # the MAC table: learning it again in the same
    uint64_t lnow                    # millisecond changes nothing, so it is skipped
    int32_t rslot                    # the INJECT being opened is relayed for this slot (-1)


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
    """One datagram: punt, drop, or decrypt in place and queue its frame. 1 if queued.
    Injected as relayed for slot rx.rslot: the newest packet on that slot's current key is
    reported (RELAYED) once it is authentic and past the replay window."""
    cdef dp_rxkey *k
    cdef dp_addr *a
    cdef uint64_t counter
    cdef int32_t slot
    cdef bint newest
    cdef uint8_t *f
    cdef size_t flen
    cdef int verdict
    cdef bint ok, notify
    cdef int learned
    if n > RP_RELAY_HDR and pkt[0] == RP_MSG_RELAY_DATA and not injected:   # the UDP relay
        return dp_rp_rx_relay(st, rx, s, pkt, n, sa, now)
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
    if n < DP_HDR + DP_ETH + fp_tag_bytes(k.kind):
        st.rxc[slot].runt += 1
        return 0
    counter = dp_le64(pkt + 8)
    dp_rx_lock(st, k)
    ok = rw_check(&k.win, counter)
    newest = k.frames == 0 or counter > k.win.last
    dp_rx_unlock(st, k)
    if not ok:
        st.rxc[slot].replay += 1
        return 0
    if dp_open(k.kind, k.state, pkt, n - DP_HDR, counter) != 0:
        st.rxc[slot].decrypt_fail += 1
        return 0
    dp_rx_lock(st, k)
    ok = rw_update(&k.win, counter)     # checks again: another worker may have taken it
    if ok:
        k.frames += 1
    notify = ok and not k.notified
    if notify:
        k.notified = 1
    dp_rx_unlock(st, k)
    if not ok:
        st.rxc[slot].replay += 1
        return 0
    if notify:
        if dp_punt(st, rx.pbuf, DP_PUNT_FIRST_RX, NULL, slot, k.local_index, NULL, 0) < 0:
            st.grx.punt_dropped += 1
    f = pkt + DP_HDR
    flen = n - dp_overhead(k.kind)
    verdict = fp_ident_check(f, flen, s.peers[slot].ident, s.peers[slot].mac,
                             s.peers[slot].bridging)
    if verdict != FP_ID_PASS:
        if verdict == FP_ID_IP:
            st.rxc[slot].ip_spoofed += 1
        elif verdict == FP_ID_ARP:
            st.rxc[slot].arp_spoofed += 1
        else:
            st.rxc[slot].spoofed += 1
        return 0
    if injected and k.current and newest and slot == rx.rslot:
        if dp_punt(st, rx.pbuf, DP_PUNT_RELAYED, NULL, slot, k.local_index, NULL, 0) < 0:
            st.grx.punt_dropped += 1
    if k.current and newest and not injected and sa != NULL and not s.peers[slot].relay_ch:
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
    # MAC learning under the table's one mutex (shared by every worker's threads); a run of
    # frames from one source in one round (one `now`) takes it once
    if not (rx.lnow == now and rx.lslot == slot and rx.lkey == mt_mac(f + 6) + 1):
        pthread_mutex_lock(&st.main.mt_lock)
        learned = mt_learn(&st.main.mt, f, flen, slot, now)
        pthread_mutex_unlock(&st.main.mt_lock)
        if learned:
            rx.lkey = mt_mac(f + 6) + 1
            rx.lslot = slot
            rx.lnow = now
    if st.aqm and rx.arrival:
        st.grx.aqm_timed += 1
        st.grx.aqm_wait_us += (rx.rt_now - rx.arrival) // 1000 if rx.rt_now > rx.arrival else 0
    if st.aqm and rx.arrival and codel_decide(
            &rx.cd, rx.rt_now - rx.arrival if rx.rt_now > rx.arrival else 0, rx.mono_now,
            rx.qempty):
        if fp_ecn_mark(f, flen):
            st.grx.aqm_marks += 1
        else:
            st.grx.aqm_drops += 1
            return 0
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
    rx.rslot = -1
    dp_name_worker("enclave-dp-rx", st.worker)
    if st.udp_gro:
        rx.nslots = 16
        rx.slotsize = 65536
    else:
        rx.nslots = UB_MAX
        rx.slotsize = ((st.max_frame + DP_MAX_OVERHEAD + 64 + 63) // 64) * 64
        if rx.slotsize < 2048:
            rx.slotsize = 2048
    # after the nslots receive slots, the inject area: frames queued from it live in the same
    # buffer (dp_rp_inject, _fp_relaypath.pxi)
    rx.buf = <uint8_t *>malloc(rx.slotsize * rx.nslots + dp_rp_inject_room(rx.slotsize))
    rx.ibuf = <uint8_t *>malloc(RP_BATCH_MAX + DP_PUNT_HDR)     # one INJECT batch
    rx.pbuf = <uint8_t *>malloc(65536 + DP_PUNT_HDR)
    if posix_memalign(<void **>&rx.ub, 64, sizeof(udp_batch)) != 0:
        rx.ub = NULL
    if rx.buf == NULL or rx.ibuf == NULL or rx.pbuf == NULL or rx.ub == NULL:
        st.stop = 1
    else:
        memset(rx.ub, 0, sizeof(udp_batch))
    nb = st.rx_batch if 0 < st.rx_batch < rx.nslots else rx.nslots
    codel_init(&rx.cd, st.aqm_target_ns, st.aqm_interval_ns)
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
            p[2].fd = st.punt_fd if st.worker == 0 else -1     # INJECT: worker 0 only
            p[2].events = POLLIN
            p[2].revents = 0
            if poll(p, 3, 1000) <= 0:
                continue
            if p[1].revents:
                break
        if more:                          # no poll this round: look for injected packets
            p[2].revents = (POLLIN if (st.grx.rounds & 7) == 0 and st.worker == 0
                            else 0)       # every 8th round, worker 0 only
        more = 0
        s = dp_enter(st, 1)
        st.grx.rounds += 1
        now = dp_now_ms()
        # batches Python injects (TCP / relay paths) through the inject area
        for m in range(DP_RX_INJECT if p[2].revents else 0):
            got = dp_recv_dgram(st.punt_fd, rx.ibuf, RP_BATCH_MAX + DP_PUNT_HDR, &trunc)
            if got < 0:
                break
            rx.arrival = 0
            dp_rp_inject(st, rx, s, rx.ibuf, got, trunc, now)
        r = ub_recv(rx.ub, st.udp_fd, rx.buf, rx.offsets, rx.sizes, rx.lengths, nb)
        if r == nb:
            more = 1
        for i in range(r if r > 0 else 0):
            st.grx.datagrams += 1
            rx.arrival = rx.ub.tstamp[i]
            if st.aqm and rx.arrival:     # per datagram: the time this round spent on the
                rx.rt_now = dp_realtime_ns()    # ones before it is part of its sojourn
                rx.mono_now = dp_now_ns()
            rx.qempty = r < nb and i == r - 1
            if rx.ub.trunc[i]:
                st.grx.truncated += 1
                continue
            seg = rx.ub.gso[i]
            n = rx.lengths[i]
            if seg == 0 or seg >= n:
                dp_rx_packet(st, rx, s, rx.buf + rx.offsets[i], n, &rx.ub.addrs[i], 0, now)
                if st.aqm and rx.nf and n <= <size_t>(DP_AQM_SPARSE_FRAME + DP_MAX_OVERHEAD
                                              + (RP_RELAY_HDR if (rx.buf + rx.offsets[i])[0]
                                                 == RP_MSG_RELAY_DATA else 0)):
                    dp_rx_flush(st, rx)   # a lone small frame (interactive, an ACK; relayed too:
                continue                  # its relay header aside) goes to the TAP now, not
                                          # after the round's bulk decrypts
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
