# The punt socket: how the native loops hand Python what is not theirs (handshakes, unknown
# senders, notices, DATA for a path that is not UDP) and how Python hands DATA back in.
# (included by _fastpath.pyx after _fp_epoch.pxi).
#
#   rx thread --DATAGRAM/FIRST_RX/ROAMED/RELAYED--> punt socket --> Python (dataplane/engine.py)
#   tx thread --TX (a batch of sealed DATA, path TCP / relay over TLS)--> punt socket --> Python
#   Python --INJECT (a batch of DATA from TCP / the relay)--> punt socket --> rx thread
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
#     4 TX        encrypted DATA packets for `slot`, whose path is TCP or the relay over TLS
#                 (or the UDP relay without a native route): a batch of `index` frames, each
#                 u16 big-endian length | packet (the TCP framing, _fp_relaypath.pxi); Python
#                 sends the batch as it is
#     6 RELAYED   a packet injected as relayed for `slot` (INJECT below, index 1) opened as
#                 the newest on that slot's current key `index`: fresh (past the replay
#                 window) authentic DATA the peer sent over a relay while our path to it is
#                 direct (no packet); Python follows the peer onto the relay. A replay of
#                 relayed DATA fails the window and says nothing
#   Python -> C:
#     5 INJECT    packets that arrived over TCP / the relay, framed the same way (one or
#                 more); each handled like a UDP datagram, except that it never moves the
#                 peer's address. slot = the peer the relay attributed them to and index =
#                 INJECT_RELAYED (1): report RELAYED as above; else slot and index are 0
#   family: 4 or 6 (0 = no address); IPv4 uses the first 4 address bytes.
#   A batch (TX, INJECT) holds at most PUNT_BATCH_MAX bytes of frames.

cdef enum:
    DP_PUNT_RELAYED = 6
    DP_INJECT_RELAYED = 1       # INJECT's index field: relayed for its slot

PUNT_RELAYED: int = DP_PUNT_RELAYED
INJECT_RELAYED: int = DP_INJECT_RELAYED

# --- punt ---------------------------------------------------------------------------------------

cdef void dp_punt_header(uint8_t *pbuf, int kind, const sockaddr_storage *sa, int32_t slot,
                         uint32_t index) noexcept nogil:
    """Write the 28-byte punt header (drawn at the top) into pbuf."""
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


cdef int dp_punt(dp_state *st, uint8_t *pbuf, int kind, const sockaddr_storage *sa,
                 int32_t slot, uint32_t index, const uint8_t *pkt, size_t n) noexcept nogil:
    """Send one punt message (header drawn at the top); pbuf has DP_PUNT_HDR + n bytes."""
    dp_punt_header(pbuf, kind, sa, slot, index)
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
