# The paths that are not plain UDP on the compiled fast path: the UDP relay, and batched
# hand-over for direct TCP and the relay over TLS (included by _fastpath.pyx after _fp_rx.pxi;
# the tx / rx loops call in here from one line each).
#
#   UDP relay (PathAddr(RELAY, relay host, channel); DataPlane.install(relay_channel=ch) with
#   the relay's UDP address as the slot's address). The datagram on the wire (wire.py):
#
#      0      1..3    4..7             8 ...
#     +------+-------+----------------+--------------------------------------+
#     |  35  | 0 0 0 | channel (u32)  | DATA: type 4, index, counter | ct+tag |
#     +------+-------+----------------+--------------------------------------+
#
#     tx: each sealed DATA message gets the 8-byte relay header written in front of it, in the
#         batch buffer (room left by dp_tx_emit), so datagrams stay back to back and a run to
#         the relay goes out as one UDP GSO message like a direct run
#     rx: RELAY_DATA around DATA for a known receiver index whose slot is relayed: accepted only
#         from that slot's (relay address, channel) -- anything else is dropped and counted
#         (rx_relay_forged); then opened exactly like a direct datagram (replay window, AEAD,
#         identity binding), except that it never moves the peer's address. RELAY_DATA around
#         anything else (handshakes, CONTROL), or for a slot that is not relayed here, is
#         punted whole (DATAGRAM) to Python's RelayClient as before.
#
#   Batched hand-over (TCP, relay over TLS: `via_python`). A batch is the TCP path's framing,
#   which is also the relay-over-TLS batch (enclave.proto.relay_batch):
#
#     batch = frame*   frame = length (u16 big-endian, 1..65535) | sealed DATA message
#
#     tx: each sealed message gets its 2-byte length in front (room left by dp_tx_emit); at
#         every flush the messages of one slot go out as one punt message TX (index = how many
#         frames), at most RP_BATCH_MAX bytes, gathered with one sendmsg (no copy); Python
#         writes the batch to the TCP stream as it is, or sends it as one WebSocket message
#     rx: Python hands complete frames back as INJECT (one or more per message, at most
#         RP_BATCH_MAX bytes); the rx thread copies them back to back into its inject area and
#         opens them like datagrams, so GRO coalesces across the batch before the TAP write
#
# Constants mirror enclave.proto.wire / relay_batch; a mismatch is an ImportError.

from enclave.proto import relay_batch as _rp_batch

cdef extern from "<sys/socket.h>" nogil:
    ssize_t sendmsg(int fd, const msghdr *msg, int flags)

cdef enum:
    RP_RELAY_HDR = 8            # wire.RELAY_HEADER_SIZE
    RP_LEN = 2                  # relay_batch.FRAME_PREFIX: u16 big-endian length
    RP_MAX_FRAME = 0xFFFF       # relay_batch.MAX_FRAME
    RP_BATCH_MAX = 1 << 18      # bytes of frames in one punt message (either way)
    RP_INJECT_AREA = 1 << 17    # the rx thread's room for one INJECT's frames, back to back
    RP_MAX_CHANNEL = 0xFFFF     # wire.RELAY_MAX_CHANNEL

if (_dp_wire.RELAY_HEADER_SIZE != RP_RELAY_HDR or _rp_batch.FRAME_PREFIX != RP_LEN
        or _rp_batch.MAX_FRAME != RP_MAX_FRAME or _dp_wire.RELAY_MAX_CHANNEL != RP_MAX_CHANNEL
        or _rp_batch.MAX_BATCH_FRAMES < DP_TX_ENTRIES
        or _rp_batch.MAX_BATCH_BYTES < RP_BATCH_MAX):
    raise ImportError("enclave.proto relay / batch framing differs from the fast path's")
cdef uint8_t RP_MSG_RELAY_DATA = _dp_wire.MSG_RELAY_DATA

PUNT_BATCH_MAX: int = RP_BATCH_MAX


# --- tx ----------------------------------------------------------------------------------------

cdef inline size_t dp_rp_room(const dp_peer *peer) noexcept nogil:
    """Bytes written in front of each sealed message for this peer: a batch length prefix
    (punted to Python), the UDP relay's header, or nothing (direct UDP)."""
    if peer.via_python:
        return RP_LEN
    if peer.relay_ch:
        return RP_RELAY_HDR
    return 0


cdef inline void dp_rp_prefix(dp_state *st, const dp_peer *peer, int32_t slot, uint8_t *h,
                              size_t n) noexcept nogil:
    """Write the prefix dp_rp_room made room for in front of the sealed message h[0:n]."""
    cdef uint8_t *p
    if peer.via_python:
        p = h - RP_LEN
        p[0] = <uint8_t>(n >> 8)
        p[1] = <uint8_t>(n & 0xFF)
        st.txc[slot].via_python += 1
    elif peer.relay_ch:
        p = h - RP_RELAY_HDR
        p[0] = RP_MSG_RELAY_DATA
        p[1] = 0
        p[2] = 0
        p[3] = 0
        dp_put_le32(p + 4, peer.relay_ch)
        st.txc[slot].relayed += 1


cdef void dp_rp_tx_punts(dp_state *st, dp_tx *tx) noexcept nogil:
    """Send the batch's punted entries (tx.punt[i]) as TX messages, one per slot and at most
    RP_BATCH_MAX bytes each, then drop them from the entry list (the UDP ones stay, in order)."""
    cdef iovec iov[DP_TX_ENTRIES + 1]
    cdef msghdr mh
    cdef int i, j, k, nio, count
    cdef int32_t slot
    cdef size_t total
    memset(&mh, 0, sizeof(msghdr))
    for i in range(tx.n):
        if tx.punt[i] != 1:
            continue
        slot = tx.slot[i]
        j = i
        while j < tx.n:
            nio = 1
            total = 0
            count = 0
            while j < tx.n:
                if tx.punt[j] == 1 and tx.slot[j] == slot:
                    if count and total + tx.len[j] > RP_BATCH_MAX:
                        break
                    iov[nio].iov_base = tx.buf + tx.off[j]
                    iov[nio].iov_len = tx.len[j]
                    nio += 1
                    total += tx.len[j]
                    count += 1
                    tx.punt[j] = 2
                j += 1
            if count == 0:
                break
            dp_punt_header(tx.pbuf, DP_PUNT_TX, NULL, slot, <uint32_t>count)
            iov[0].iov_base = tx.pbuf
            iov[0].iov_len = DP_PUNT_HDR
            mh.msg_iov = iov
            mh.msg_iovlen = nio
            st.gtx.punt_batches += 1
            if sendmsg(st.punt_fd, &mh, MSG_DONTWAIT) < 0:
                st.gtx.punt_dropped += count
    k = 0
    for i in range(tx.n):
        if tx.punt[i]:
            tx.punt[i] = 0
            continue
        if k != i:
            tx.off[k] = tx.off[i]
            tx.len[k] = tx.len[i]
            tx.slot[k] = tx.slot[i]
            tx.dlen[k] = tx.dlen[i]
            memcpy(&tx.dst[k], &tx.dst[i], tx.dlen[i])
        k += 1
    tx.n = k
    tx.npunt = 0


# --- rx ----------------------------------------------------------------------------------------

cdef int dp_rp_rx_relay(dp_state *st, dp_rx *rx, dp_snap *s, uint8_t *pkt, size_t n,
                        const sockaddr_storage *sa, uint64_t now) noexcept nogil:
    """A RELAY_DATA datagram (pkt[0] checked by the caller): open the DATA inside it if it
    came from its slot's relay route, drop it if it claims a relayed slot from elsewhere,
    punt it otherwise. 1 if a frame was queued."""
    cdef uint8_t *inner = pkt + RP_RELAY_HDR
    cdef dp_rxkey *k
    cdef dp_addr *a
    cdef int32_t slot
    cdef bint ok
    if (n < RP_RELAY_HDR + DP_HDR or pkt[1] or pkt[2] or pkt[3] or inner[0] != DP_MSG_DATA
            or inner[1] or inner[2] or inner[3]):
        k = NULL
    else:
        k = dp_find(s, dp_le32(inner + 4))
    if k == NULL or not s.peers[k.slot].relay_ch:
        st.grx.punted += 1
        if dp_punt(st, rx.pbuf, DP_PUNT_DATAGRAM, sa, -1, 0, pkt, n) < 0:
            st.grx.punt_dropped += 1
        return 0
    slot = k.slot
    a = &st.addrs[slot]
    pthread_mutex_lock(&a.lock)
    ok = sa != NULL and dp_same_addr(&a.sa, a.len, sa)
    pthread_mutex_unlock(&a.lock)
    if not ok or dp_le32(pkt + 4) != s.peers[slot].relay_ch:
        st.rxc[slot].relay_forged += 1
        return 0
    st.rxc[slot].relayed += 1
    return dp_rx_packet(st, rx, s, inner, n - RP_RELAY_HDR, sa, 1, now)


cdef inline size_t dp_rp_inject_room(size_t slotsize) noexcept nogil:
    """Bytes of the rx buffer after the receive slots, for injected frames."""
    return RP_INJECT_AREA if slotsize < RP_INJECT_AREA else slotsize


cdef void dp_rp_inject(dp_state *st, dp_rx *rx, dp_snap *s, const uint8_t *msg, ssize_t got,
                       int trunc, uint64_t now) noexcept nogil:
    """One INJECT punt message (header + frames): each frame copied into the inject area
    (aligned, back to back) and opened like a datagram that came from nowhere (no roaming);
    the area is written to the TAP when full and at the end. A malformed message (wrong kind,
    truncated, a zero or overrunning length) is dropped from that point on and counted.
    Relayed for a slot (index INJECT_RELAYED): dp_rx_packet reports fresh ones (RELAYED)."""
    cdef size_t base = <size_t>rx.nslots * rx.slotsize
    cdef size_t room = dp_rp_inject_room(rx.slotsize)
    cdef size_t off = DP_PUNT_HDR, end, flen, at = 0
    if trunc or got < DP_PUNT_HDR + RP_LEN or msg[0] != DP_PUNT_INJECT:
        st.grx.malformed += 1
        return
    end = <size_t>got
    st.grx.inject_msgs += 1
    rx.rslot = (<int32_t>dp_le32(msg + 4) if dp_le32(msg + 8) == DP_INJECT_RELAYED else -1)
    while off < end:
        if end - off < RP_LEN:
            st.grx.malformed += 1
            break
        flen = (<size_t>msg[off] << 8) | msg[off + 1]
        off += RP_LEN
        if flen == 0 or flen > end - off or flen + 64 > room:
            st.grx.malformed += 1
            break
        if at + flen > room:
            dp_rx_flush(st, rx)
            at = 0
        memcpy(rx.buf + base + at, msg + off, flen)
        st.grx.injected += 1
        dp_rx_packet(st, rx, s, rx.buf + base + at, flen, NULL, 1, now)
        at = (at + flen + 63) & ~(<size_t>63)
        off += flen
    rx.rslot = -1
    dp_rx_flush(st, rx)


# --- Python: split a byte stream into runs of frames (TCP streams, relay-over-TLS batches) ----

def frame_runs(data, Py_ssize_t offset=0, Py_ssize_t max_run=RP_BATCH_MAX):
    """Walk the frames (u16 big-endian length | message) of data[offset:] without copying.

    Returns (end, frames, runs): end = where the last complete frame ends (a partial frame
    after it is left for later), frames = how many complete frames, runs = [(start, stop,
    is_data)] covering offset..end in order: consecutive frames whose message is DATA
    (type 4) form one run of at most max_run bytes (prefixes included), every other frame is
    a run of its own (without its prefix). ValueError on a zero length (the framing broke).
    """
    cdef const uint8_t[::1] view = data
    cdef Py_ssize_t n = view.shape[0]
    cdef Py_ssize_t off = offset, flen, start = -1
    cdef Py_ssize_t frames = 0
    cdef bint data_msg
    runs = []
    if offset < 0 or offset > n or max_run < RP_LEN + 1:
        raise ValueError("bad offset or max_run")
    while n - off >= RP_LEN:
        flen = (<Py_ssize_t>view[off] << 8) | view[off + 1]
        if flen == 0:
            raise ValueError("a zero-length frame")
        if off + RP_LEN + flen > n:
            break
        data_msg = view[off + RP_LEN] == DP_MSG_DATA
        if start >= 0 and (not data_msg or off + RP_LEN + flen - start > max_run):
            runs.append((start, off, True))
            start = -1
        if data_msg:
            if start < 0:
                start = off
        else:
            runs.append((off + RP_LEN, off + RP_LEN + flen, False))
        off += RP_LEN + flen
        frames += 1
    if start >= 0:
        runs.append((start, off, True))
    return off, frames, runs
