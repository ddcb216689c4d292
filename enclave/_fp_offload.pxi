# TCP segmentation (TSO split) and receive coalescing (GRO) for a vnet_hdr TAP
# (included by _fastpath.pyx). Pure byte work: no syscalls, no GIL, no allocation.
#
# With IFF_VNET_HDR + TUNSETOFFLOAD(CSUM|TSO4|TSO6) every TAP read/write carries a 10-byte
# legacy virtio_net_hdr (host byte order) in front of the Ethernet frame:
#
#   0       1          2..3     4..5      6..7        8..9         10 ...
#   +-------+----------+--------+---------+-----------+------------+----------------------+
#   | flags | gso_type | hdr_len| gso_size| csum_start| csum_offset| Ethernet frame       |
#   +-------+----------+--------+---------+-----------+------------+----------------------+
#   flags: 1 NEEDS_CSUM (L4 checksum field holds the pseudo-header sum; sum from csum_start
#          and store at csum_start + csum_offset), 2 DATA_VALID (checksum already verified)
#   gso_type: 0 NONE, 1 TCPV4, 4 TCPV6, 0x80 ECN bit; csum_start counts from the frame start
#
# Outbound (TAP -> peers), fo_tso_split():
#
#   TAP read: [vnet hdr][eth][ip][tcp][payload ............................ up to ~64 KB]
#                                        |  gso_size  |  gso_size  | ... | rest |
#   batch buffer (the AEAD/UDP layout of _fp_aead.pxi, frames packed back to back, so the
#   whole run is also ready for one UDP_SEGMENT send):
#     start
#     | headroom | eth ip tcp seg0 | tailroom | headroom | eth ip tcp seg1 | tailroom | ...
#     ^offsets[0] <- lengths[0] ->            ^offsets[1] <- lengths[1] ->
#   Per segment: IPv4 total length, id (+i) and header checksum / IPv6 payload length; TCP
#   seq (+i*gso_size), FIN/PSH only on the last, CWR only on the first, full TCP checksum
#   with the pseudo-header. A GSO_NONE frame is copied as is (NEEDS_CSUM completed first).
#
# Inbound (peers -> TAP), fo_gro():
#
#   decrypted frames at base + offsets[i] + headroom (headroom >= 10: the virtio header of a
#   frame that passes through is written in place right in front of it)
#     f0 f1 f2 f3 f4 ...  --> same flow, contiguous seq, equal size (last may be smaller),
#                             flags ACK[/PSH on the last], same IP/TCP headers otherwise
#   out spans, in order of each run's first frame (order within a flow is kept):
#     [vnet TCPV4/6 NEEDS_CSUM gso_size][eth ip tcp | payload f0 f1 f3 ...]   (in `arena`)
#     [vnet NONE DATA_VALID or 0][f2]                                           (in place)
#   A coalesced frame carries IPv4 total length + header checksum / IPv6 payload length for
#   the whole run and, in the TCP checksum field, the folded pseudo-header sum (not inverted),
#   as the kernel expects for CHECKSUM_PARTIAL. With `verify` every candidate's TCP checksum
#   is checked first: a bad one passes through alone with flags 0 (the kernel drops it), a
#   good one that stays alone gets DATA_VALID.
#
# Facts (not code) from wireguard-go tun/offload_linux.go and the kernel's tcp/ipv4/ipv6 GRO.

cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy
from posix.uio cimport iovec

cdef enum:
    FO_VNET_HDR_LEN = 10
    FO_TSO_MAX_SEGS = 64
    FO_GRO_MAX_FRAMES = 256
    FO_MAX_HDR = 18 + 60 + 60       # VLAN Ethernet + IPv4 with options + TCP with options
    FO_F_NEEDS_CSUM = 1
    FO_F_DATA_VALID = 2
    FO_GSO_NONE = 0
    FO_GSO_TCPV4 = 1
    FO_GSO_TCPV6 = 4
    FO_GSO_ECN = 0x80
    FO_ETH_IPV4 = 0x0800
    FO_ETH_IPV6 = 0x86DD
    FO_ETH_VLAN = 0x8100
    FO_TCP_FIN = 0x01
    FO_TCP_SYN = 0x02
    FO_TCP_RST = 0x04
    FO_TCP_PSH = 0x08
    FO_TCP_ACK = 0x10
    FO_TCP_URG = 0x20
    FO_TCP_CWR = 0x80

# Error codes (negative returns). Names for Python in OFFLOAD_ERRORS below.
cdef enum:
    FO_E_SHORT = -1        # shorter than the headers it claims
    FO_E_GSO_TYPE = -2     # gso_type other than NONE/TCPV4/TCPV6, or not matching the frame
    FO_E_L3 = -3           # not IPv4/IPv6 TCP, bad IP header or IP length
    FO_E_L4 = -4           # bad TCP header length / no payload
    FO_E_CSUM = -5         # csum_start/csum_offset out of range or not the TCP checksum
    FO_E_GSO_SIZE = -6     # gso_size 0
    FO_E_TOO_MANY = -7     # more segments than FO_TSO_MAX_SEGS / the caller allows
    FO_E_TOO_BIG = -8      # a segment would exceed max_frame
    FO_E_NOSPACE = -9      # output buffer too small
    FO_E_ARG = -10         # bad call arguments (headroom < 10, n too large, ...)

OFFLOAD_ERRORS: dict = {
    FO_E_SHORT: "short",
    FO_E_GSO_TYPE: "gso_type",
    FO_E_L3: "l3",
    FO_E_L4: "l4",
    FO_E_CSUM: "csum",
    FO_E_GSO_SIZE: "gso_size",
    FO_E_TOO_MANY: "too_many_segments",
    FO_E_TOO_BIG: "segment_too_big",
    FO_E_NOSPACE: "no_space",
    FO_E_ARG: "bad_argument",
}
VNET_HDR_LEN: int = FO_VNET_HDR_LEN
TSO_MAX_SEGS: int = FO_TSO_MAX_SEGS
GRO_MAX_FRAMES: int = FO_GRO_MAX_FRAMES


class OffloadError(ValueError):
    """A frame rejected by tso_split/gro_coalesce; `.code` is the negative C error code."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"offload error {code} ({OFFLOAD_ERRORS.get(code, '?')})")


cdef struct fo_span:
    uint8_t *ptr
    uint32_t len


# --- byte helpers -------------------------------------------------------------------------

cdef inline uint32_t fo_be16(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]


cdef inline void fo_put_be16(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>((v >> 8) & 0xFF)
    p[1] = <uint8_t>(v & 0xFF)


cdef inline uint32_t fo_be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void fo_put_be32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>((v >> 16) & 0xFF)
    p[2] = <uint8_t>((v >> 8) & 0xFF)
    p[3] = <uint8_t>(v & 0xFF)


cdef inline uint16_t fo_host16(const uint8_t *p) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return v


cdef inline void fo_put_host16(uint8_t *p, uint16_t v) noexcept nogil:
    memcpy(p, &v, 2)


cdef inline void fo_vnet_write(uint8_t *p, uint8_t flags, uint8_t gso_type, uint16_t hdr_len,
                               uint16_t gso_size, uint16_t csum_start,
                               uint16_t csum_offset) noexcept nogil:
    p[0] = flags
    p[1] = gso_type
    fo_put_host16(p + 2, hdr_len)
    fo_put_host16(p + 4, gso_size)
    fo_put_host16(p + 6, csum_start)
    fo_put_host16(p + 8, csum_offset)


# --- Internet checksum (RFC 1071) -----------------------------------------------------------
# Summed over native-order words: the folded sum, stored back in native order, is the correct
# network-order checksum on either endianness (RFC 1071 section 2(B)).

cdef inline uint64_t fo_csum_add(const uint8_t *p, size_t n, uint64_t acc) noexcept nogil:
    cdef uint64_t w
    cdef uint32_t w32
    cdef uint16_t w16 = 0
    while n >= 32:
        memcpy(&w, p, 8)
        acc += <uint32_t>w + (w >> 32)
        memcpy(&w, p + 8, 8)
        acc += <uint32_t>w + (w >> 32)
        memcpy(&w, p + 16, 8)
        acc += <uint32_t>w + (w >> 32)
        memcpy(&w, p + 24, 8)
        acc += <uint32_t>w + (w >> 32)
        p += 32
        n -= 32
    while n >= 4:
        memcpy(&w32, p, 4)
        acc += w32
        p += 4
        n -= 4
    if n >= 2:
        memcpy(&w16, p, 2)
        acc += w16
        p += 2
        n -= 2
    if n:
        w16 = 0
        memcpy(&w16, p, 1)   # the odd byte is the high-order byte of a zero-padded word
        acc += w16
    return acc


cdef inline uint16_t fo_csum_fold(uint64_t acc) noexcept nogil:
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return <uint16_t>acc


cdef inline uint64_t fo_net16(uint32_t v) noexcept nogil:
    """v as a network-order 16-bit word, read natively (what fo_csum_add would add)."""
    cdef uint8_t b[2]
    cdef uint16_t w
    b[0] = <uint8_t>((v >> 8) & 0xFF)
    b[1] = <uint8_t>(v & 0xFF)
    memcpy(&w, b, 2)
    return w


cdef inline uint64_t fo_pseudo(const uint8_t *l3, bint v6, uint32_t l4len) noexcept nogil:
    """Unfolded TCP pseudo-header sum: addresses + protocol 6 + L4 length."""
    cdef uint64_t acc
    if v6:
        acc = fo_csum_add(l3 + 8, 32, 0)
    else:
        acc = fo_csum_add(l3 + 12, 8, 0)
    return acc + fo_net16(6) + fo_net16(l4len & 0xFFFF) + fo_net16(l4len >> 16)


cdef inline void fo_ipv4_csum(uint8_t *ip, uint32_t ihl) noexcept nogil:
    ip[10] = 0
    ip[11] = 0
    fo_put_host16(ip + 10, <uint16_t>~fo_csum_fold(fo_csum_add(ip, ihl, 0)))


# --- frame parsing ---------------------------------------------------------------------------

cdef struct fo_tcpinfo:
    uint32_t l2        # Ethernet header length: 14, or 18 with one 802.1Q tag
    uint32_t l4        # offset of the TCP header (= l2 + IP header length)
    uint32_t hdrlen    # l4 + TCP header length
    uint32_t payload   # TCP payload bytes
    uint32_t end       # end of the IP packet (== frame length unless Ethernet padding)
    bint v6


cdef inline int fo_parse_eth(const uint8_t *f, size_t flen, uint32_t *l2,
                             uint32_t *ethertype) noexcept nogil:
    if flen < 14:
        return FO_E_SHORT
    ethertype[0] = fo_be16(f + 12)
    l2[0] = 14
    if ethertype[0] == FO_ETH_VLAN:
        if flen < 18:
            return FO_E_SHORT
        ethertype[0] = fo_be16(f + 16)
        l2[0] = 18
    return 0


cdef int fo_parse_tcp(const uint8_t *f, size_t flen, fo_tcpinfo *t, bint exact) noexcept nogil:
    """Locate the IP and TCP headers of an Ethernet frame; 0 or a negative error.

    exact: the IP length field must cover the frame to its last byte; otherwise trailing
    Ethernet padding is allowed (t.end marks where the IP packet ends). Rejects fragments
    and headers that do not lie inside the packet. IPv6 extension headers are not followed
    (next header must be TCP).
    """
    cdef uint32_t l2, et, ihl, thl, iplen
    cdef int rc = fo_parse_eth(f, flen, &l2, &et)
    cdef const uint8_t *ip
    if rc < 0:
        return rc
    t.l2 = l2
    ip = f + l2
    if et == FO_ETH_IPV4:
        if flen < l2 + 20:
            return FO_E_SHORT
        ihl = (ip[0] & 0x0F) * 4
        if (ip[0] >> 4) != 4 or ihl < 20 or ip[9] != 6:
            return FO_E_L3
        if flen < l2 + ihl:
            return FO_E_SHORT
        iplen = fo_be16(ip + 2)
        if iplen < ihl:
            return FO_E_L3
        if (ip[6] & 0x20) or (fo_be16(ip + 6) & 0x1FFF):
            return FO_E_L3          # MF or a fragment offset: never TCP-segmentable
        t.v6 = 0
        t.l4 = l2 + ihl
    elif et == FO_ETH_IPV6:
        if flen < l2 + 40:
            return FO_E_SHORT
        if (ip[0] >> 4) != 6 or ip[6] != 6:
            return FO_E_L3
        iplen = 40 + fo_be16(ip + 4)
        t.v6 = 1
        t.l4 = l2 + 40
    else:
        return FO_E_L3
    if iplen > flen - l2 or (exact and iplen != flen - l2):
        return FO_E_L3
    t.end = l2 + iplen
    if t.end < t.l4 + 20:
        return FO_E_SHORT
    thl = (f[t.l4 + 12] >> 4) * 4
    if thl < 20:
        return FO_E_L4
    if t.end < t.l4 + thl:
        return FO_E_SHORT
    t.hdrlen = t.l4 + thl
    t.payload = t.end - t.hdrlen
    return 0


cdef inline uint32_t fo_l3_end(const uint8_t *f, size_t flen) noexcept nogil:
    """End of the IP packet inside the frame (excludes Ethernet padding), else flen."""
    cdef uint32_t l2, et, end
    if fo_parse_eth(f, flen, &l2, &et) < 0:
        return <uint32_t>flen
    if et == FO_ETH_IPV4 and flen >= l2 + 20 and (f[l2] >> 4) == 4:
        end = l2 + fo_be16(f + l2 + 2)
    elif et == FO_ETH_IPV6 and flen >= l2 + 40 and (f[l2] >> 4) == 6:
        end = l2 + 40 + fo_be16(f + l2 + 4)
    else:
        return <uint32_t>flen
    return end if end <= flen else <uint32_t>flen


# --- TSO split ---------------------------------------------------------------------------------

cdef struct fo_tso:
    # what fo_tso_parse found in one vnet_hdr TAP read (pkt = vnet header + frame)
    uint8_t *f          # the Ethernet frame (pkt + 10)
    size_t flen
    fo_tcpinfo t
    uint32_t nseg       # frames it becomes (1 for GSO_NONE)
    uint32_t gso_size
    uint32_t end        # GSO_NONE + NEEDS_CSUM: where the checksummed data ends
    uint32_t csum_start
    uint32_t csum_offset
    uint32_t seq0
    uint32_t id0
    uint8_t flags
    bint gso            # TCP segmentation needed (else: one frame as is)
    uint8_t tmpl[FO_MAX_HDR]     # fo_tso_inplace: the original headers


@cython.cdivision(True)
cdef int fo_tso_parse(const uint8_t *pkt, size_t pkt_len, size_t max_frame,
                      int max_out, fo_tso *s) noexcept nogil:
    """Validate one vnet_hdr TAP read for fo_tso_split / fo_tso_inplace; nseg or FO_E_*."""
    cdef uint8_t gso_type
    cdef uint32_t csum_start, csum_offset
    cdef int rc
    if max_out < 1:
        return FO_E_ARG
    if pkt_len < FO_VNET_HDR_LEN + 14:
        return FO_E_SHORT
    s.flags = pkt[0]
    gso_type = pkt[1]
    s.gso_size = fo_host16(pkt + 4)
    csum_start = fo_host16(pkt + 6)
    csum_offset = fo_host16(pkt + 8)
    s.f = <uint8_t *>pkt + FO_VNET_HDR_LEN
    s.flen = pkt_len - FO_VNET_HDR_LEN
    s.csum_start = csum_start
    s.csum_offset = csum_offset

    if (gso_type & ~FO_GSO_ECN) == FO_GSO_NONE:
        s.gso = 0
        s.nseg = 1
        if max_frame and s.flen > max_frame:
            return FO_E_TOO_BIG
        if s.flags & FO_F_NEEDS_CSUM:
            s.end = fo_l3_end(s.f, s.flen)
            if csum_start > s.end or csum_offset > s.end - csum_start or \
                    s.end - csum_start - csum_offset < 2:
                return FO_E_CSUM
        return 1

    s.gso = 1
    if (gso_type & ~FO_GSO_ECN) != FO_GSO_TCPV4 and (gso_type & ~FO_GSO_ECN) != FO_GSO_TCPV6:
        return FO_E_GSO_TYPE
    rc = fo_parse_tcp(s.f, s.flen, &s.t, 1)
    if rc < 0:
        return rc
    if s.t.v6 != ((gso_type & ~FO_GSO_ECN) == FO_GSO_TCPV6):
        return FO_E_GSO_TYPE
    if not (s.flags & FO_F_NEEDS_CSUM) or csum_start != s.t.l4 or csum_offset != 16:
        return FO_E_CSUM
    if s.gso_size == 0:
        return FO_E_GSO_SIZE
    if s.t.payload == 0:
        return FO_E_L4
    s.nseg = (s.t.payload + s.gso_size - 1) // s.gso_size
    if s.nseg > FO_TSO_MAX_SEGS or s.nseg > <uint32_t>max_out:
        return FO_E_TOO_MANY
    if max_frame and s.t.hdrlen + (s.gso_size if s.gso_size < s.t.payload
                                   else s.t.payload) > max_frame:
        return FO_E_TOO_BIG
    s.seq0 = fo_be32(s.f + s.t.l4 + 4)
    s.id0 = fo_be16(s.f + s.t.l2 + 4)
    return <int>s.nseg


cdef inline void fo_tso_fix(const fo_tso *s, uint8_t *out, uint32_t i,
                            uint32_t seg) noexcept nogil:
    """Patch segment i's headers at out (a copy of the original's) for `seg` payload bytes
    that follow them contiguously, and fill in its TCP checksum."""
    cdef uint32_t thl = s.t.hdrlen - s.t.l4
    cdef uint32_t l3len = s.t.l4 - s.t.l2
    cdef uint8_t *ip = out + s.t.l2
    cdef uint8_t *th = out + s.t.l4
    if s.t.v6:
        fo_put_be16(ip + 4, thl + seg)
    else:
        fo_put_be16(ip + 2, l3len + thl + seg)
        fo_put_be16(ip + 4, (s.id0 + i) & 0xFFFF)
        fo_ipv4_csum(ip, l3len)
    fo_put_be32(th + 4, s.seq0 + i * s.gso_size)
    if i + 1 < s.nseg:
        th[13] &= ~(FO_TCP_FIN | FO_TCP_PSH)
    if i > 0:
        th[13] &= ~FO_TCP_CWR
    th[16] = 0
    th[17] = 0
    fo_put_host16(th + 16, <uint16_t>~fo_csum_fold(
        fo_csum_add(th, thl + seg, fo_pseudo(ip, s.t.v6, thl + seg))))


@cython.cdivision(True)
cdef int fo_tso_split(const uint8_t *pkt, size_t pkt_len, uint8_t *buf, size_t buf_len,
                      size_t start, size_t headroom, size_t tailroom, size_t max_frame,
                      uint32_t *offsets, uint32_t *lengths, int max_out) noexcept nogil:
    """Split one vnet_hdr TAP read (pkt) into standalone frames packed into buf.

    Frame i goes to buf[offsets[i] + headroom:][:lengths[i]]; offsets[0] = start and each
    slot is headroom + lengths[i] + tailroom bytes. max_frame (0 = no limit) bounds every
    output frame. Returns the number of frames (>= 1) or a negative FO_E_* code; on error
    buf may hold partial output but offsets/lengths are meaningless. Never reads pkt or
    writes buf out of bounds. The input is not modified.
    """
    cdef uint32_t i, seg
    cdef size_t need, pos, remaining
    cdef uint8_t *out
    cdef fo_tso s
    cdef int rc
    if start > buf_len or buf_len > 0xFFFFFFFFUL:
        return FO_E_ARG
    rc = fo_tso_parse(pkt, pkt_len, max_frame, max_out, &s)
    if rc < 0:
        return rc
    if not s.gso:
        if headroom + s.flen + tailroom > buf_len - start:
            return FO_E_NOSPACE
        out = buf + start + headroom
        memcpy(out, s.f, s.flen)
        if s.flags & FO_F_NEEDS_CSUM:
            # The field holds the pseudo-header sum; summing over it completes the checksum.
            fo_put_host16(out + s.csum_start + s.csum_offset, <uint16_t>~fo_csum_fold(
                fo_csum_add(out + s.csum_start, s.end - s.csum_start, 0)))
        offsets[0] = <uint32_t>start
        lengths[0] = <uint32_t>s.flen
        return 1

    need = <size_t>s.nseg * (headroom + tailroom + s.t.hdrlen) + s.t.payload
    if need > buf_len - start:
        return FO_E_NOSPACE
    pos = start
    remaining = s.t.payload
    for i in range(s.nseg):
        seg = s.gso_size if remaining > s.gso_size else <uint32_t>remaining
        out = buf + pos + headroom
        memcpy(out, s.f, s.t.hdrlen)
        memcpy(out + s.t.hdrlen, s.f + s.t.hdrlen + <size_t>i * s.gso_size, seg)
        fo_tso_fix(&s, out, i, seg)
        offsets[i] = <uint32_t>pos
        lengths[i] = s.t.hdrlen + seg
        pos += headroom + s.t.hdrlen + seg + tailroom
        remaining -= seg
    return <int>s.nseg


# In-place TSO (fo_tso_inplace + fo_tso_next): no payload copy. Segment i's headers are
# written in front of its own payload, inside the TAP read buffer, over the tail of the
# payload before it, so each segment is contiguous where it lies and can be sealed straight
# into the output datagram (out-of-place AEAD). Segments must be taken in order 0, 1, ...
# and each used before the next is made; the read buffer is clobbered.
#
#   pkt:  | vnet | H | p0 .......... | p1 .......... | p2 ..... |
#   seg0:        [H0 p0 ..........]                                (H0 over H)
#   seg1:                      [H1 | p1 .......... ]               (H1 over p0's tail)
#   seg2:                                     [H2 | p2 ..... ]     (H2 over p1's tail)

@cython.cdivision(True)
cdef int fo_tso_inplace(uint8_t *pkt, size_t pkt_len, size_t max_frame, int max_out,
                        fo_tso *s) noexcept nogil:
    """Validate pkt (as fo_tso_split does) and prepare fo_tso_next; nseg or FO_E_*."""
    cdef int rc = fo_tso_parse(pkt, pkt_len, max_frame, max_out, s)
    if rc < 0:
        return rc
    if s.gso:
        memcpy(s.tmpl, s.f, s.t.hdrlen)
    return rc


@cython.cdivision(True)
cdef uint8_t *fo_tso_next(fo_tso *s, uint32_t i, uint32_t *length) noexcept nogil:
    """Segment i (0 <= i < nseg, in order) made ready in place; its frame and length."""
    cdef uint8_t *out
    cdef uint32_t seg, remaining
    if not s.gso:
        if s.flags & FO_F_NEEDS_CSUM:
            fo_put_host16(s.f + s.csum_start + s.csum_offset, <uint16_t>~fo_csum_fold(
                fo_csum_add(s.f + s.csum_start, s.end - s.csum_start, 0)))
            s.flags &= ~FO_F_NEEDS_CSUM
        length[0] = <uint32_t>s.flen
        return s.f
    remaining = s.t.payload - i * s.gso_size
    seg = s.gso_size if remaining > s.gso_size else remaining
    out = s.f + <size_t>i * s.gso_size
    memcpy(out, s.tmpl, s.t.hdrlen)
    fo_tso_fix(s, out, i, seg)
    length[0] = s.t.hdrlen + seg
    return out


# --- GRO coalesce -------------------------------------------------------------------------------

cdef struct fo_groframe:
    fo_tcpinfo t
    int parsed         # 1: TCP/IP headers located (flow key valid)
    int cand           # 1: may be merged
    int csum           # 1 verified good, 0 verified bad, -1 not checked
    int group          # index into groups, -1 none
    int next           # next frame of the same group, -1 last


cdef struct fo_group:
    int first
    int last
    int count
    int open
    uint32_t gso_size
    uint32_t total      # payload bytes
    uint32_t next_seq
    int emitted         # 0 not yet, 1 coalesced into the arena, 2 frames pass through alone


cdef inline bint fo_same_flow(const uint8_t *a, const fo_tcpinfo *ta,
                              const uint8_t *b, const fo_tcpinfo *tb) noexcept nogil:
    """Same Ethernet header, IP version/header size, addresses and ports."""
    if ta.l2 != tb.l2 or ta.v6 != tb.v6 or ta.l4 != tb.l4 or ta.hdrlen != tb.hdrlen:
        return 0
    if memcmp(a, b, ta.l2) != 0:
        return 0
    if ta.v6:
        if memcmp(a + ta.l2 + 8, b + tb.l2 + 8, 32) != 0:
            return 0
    elif memcmp(a + ta.l2 + 12, b + tb.l2 + 12, 8) != 0:
        return 0
    return memcmp(a + ta.l4, b + tb.l4, 4) == 0


cdef inline bint fo_headers_match(const uint8_t *a, const uint8_t *b,
                                  const fo_tcpinfo *t) noexcept nogil:
    """Everything but lengths, IPv4 id/checksum, TCP seq/checksum and PSH is equal."""
    cdef const uint8_t *ia = a + t.l2
    cdef const uint8_t *ib = b + t.l2
    cdef const uint8_t *ta = a + t.l4
    cdef const uint8_t *tb = b + t.l4
    if t.v6:
        if memcmp(ia, ib, 4) != 0 or ia[7] != ib[7]:     # version, class, flow label; hops
            return 0
    else:
        if ia[1] != ib[1] or (ia[6] & 0xE0) != (ib[6] & 0xE0) or ia[8] != ib[8]:
            return 0                                     # TOS, DF/reserved, TTL
    if memcmp(ta + 8, tb + 8, 4) != 0:                   # ack
        return 0
    if ta[12] != tb[12] or (ta[13] & ~FO_TCP_PSH) != (tb[13] & ~FO_TCP_PSH):
        return 0
    if memcmp(ta + 14, tb + 14, 2) != 0 or memcmp(ta + 18, tb + 18, 2) != 0:
        return 0                                         # window, urgent pointer
    return memcmp(ta + 20, tb + 20, t.hdrlen - t.l4 - 20) == 0   # options


cdef int fo_gro_group(uint8_t *base, const uint32_t *offsets, const uint32_t *lengths, int n,
                      size_t headroom, fo_groframe *fr, fo_group *gr, bint verify) noexcept nogil:
    """Pass 1 of fo_gro / fo_gro_iov: classify frames, group same-flow runs; returns #groups."""
    cdef int i, j, g, ng = 0
    cdef const uint8_t *fi
    cdef const uint8_t *fj
    cdef uint32_t seq, flen, l4len
    cdef uint8_t tflags
    # Pass 1: classify, then group same-flow runs (each flow has at most one open group).
    for i in range(n):
        fi = base + offsets[i] + headroom
        flen = lengths[i]
        fr[i].group = -1
        fr[i].next = -1
        fr[i].cand = 0
        fr[i].csum = -1
        fr[i].parsed = fo_parse_tcp(fi, flen, &fr[i].t, 0) == 0
        if not fr[i].parsed:
            continue
        tflags = fi[fr[i].t.l4 + 13]
        fr[i].cand = ((tflags & FO_TCP_ACK) and not (tflags & (FO_TCP_SYN | FO_TCP_FIN |
                      FO_TCP_RST | FO_TCP_URG | FO_TCP_CWR)) and fr[i].t.payload > 0
                      and fr[i].t.end == flen
                      and (fr[i].t.v6 or fr[i].t.l4 - fr[i].t.l2 == 20))
        if fr[i].cand and verify:
            l4len = flen - fr[i].t.l4
            fr[i].csum = fo_csum_fold(fo_csum_add(
                fi + fr[i].t.l4, l4len, fo_pseudo(fi + fr[i].t.l2, fr[i].t.v6, l4len))) == 0xFFFF
            fr[i].cand = fr[i].csum
        # find this flow's open group
        g = -1
        for j in range(ng):
            if gr[j].open:
                fj = base + offsets[gr[j].first] + headroom
                if fo_same_flow(fi, &fr[i].t, fj, &fr[gr[j].first].t):
                    g = j
                    break
        if g >= 0:
            seq = fo_be32(fi + fr[i].t.l4 + 4)
            if (fr[i].cand and seq == gr[g].next_seq and fr[i].t.payload <= gr[g].gso_size
                    and gr[g].count < FO_TSO_MAX_SEGS
                    and fr[i].t.hdrlen - fr[i].t.l2 + gr[g].total + fr[i].t.payload <= 65535
                    and fo_headers_match(fi, fj, &fr[i].t)):
                fr[gr[g].last].next = i
                fr[i].group = g
                gr[g].last = i
                gr[g].count += 1
                gr[g].total += fr[i].t.payload
                gr[g].next_seq = seq + fr[i].t.payload
                if fr[i].t.payload < gr[g].gso_size or (fi[fr[i].t.l4 + 13] & FO_TCP_PSH):
                    gr[g].open = 0
                continue
            gr[g].open = 0   # same flow, not contiguous: nothing may join the older run
        if not fr[i].cand:
            continue
        gr[ng].first = i
        gr[ng].last = i
        gr[ng].count = 1
        gr[ng].open = not (fi[fr[i].t.l4 + 13] & FO_TCP_PSH)
        gr[ng].gso_size = fr[i].t.payload
        gr[ng].total = fr[i].t.payload
        gr[ng].next_seq = fo_be32(fi + fr[i].t.l4 + 4) + fr[i].t.payload
        gr[ng].emitted = 0
        fr[i].group = ng
        ng += 1

    return ng


cdef int fo_gro(uint8_t *base, const uint32_t *offsets, const uint32_t *lengths, int n,
                size_t headroom, uint8_t *arena, size_t arena_len, fo_span *out, int out_max,
                bint verify) noexcept nogil:
    """Coalesce a run of decrypted frames for one write each to a vnet_hdr TAP.

    Frame i is base[offsets[i] + headroom:][:lengths[i]]; headroom >= FO_VNET_HDR_LEN because
    a frame that passes through gets its virtio header written in place in front of it.
    Coalesced super-frames (virtio header included) are built in arena. Fills out[0..k) with
    what to write, returns k, or a negative FO_E_* code before touching anything. A run that
    does not fit the arena is written frame by frame instead.
    """
    cdef fo_groframe fr[FO_GRO_MAX_FRAMES]
    cdef fo_group gr[FO_GRO_MAX_FRAMES]
    cdef int i, j, g, k = 0
    cdef const uint8_t *fj
    cdef uint8_t *f
    cdef uint8_t *o
    cdef uint8_t *th
    cdef uint32_t l3len, thl
    cdef size_t apos = 0, need
    if n < 0 or n > FO_GRO_MAX_FRAMES or out_max < n or headroom < FO_VNET_HDR_LEN:
        return FO_E_ARG

    fo_gro_group(base, offsets, lengths, n, headroom, fr, gr, verify)

    # Pass 2: emit in order of each run's first frame.
    for i in range(n):
        f = base + offsets[i] + headroom
        g = fr[i].group
        if g >= 0 and gr[g].count > 1:
            if gr[g].emitted == 1:
                continue
            if gr[g].emitted == 0:
                need = FO_VNET_HDR_LEN + fr[i].t.hdrlen + gr[g].total
                if need <= arena_len - apos:
                    o = arena + apos
                    thl = fr[i].t.hdrlen - fr[i].t.l4
                    l3len = fr[i].t.l4 - fr[i].t.l2
                    fo_vnet_write(o, FO_F_NEEDS_CSUM,
                                  FO_GSO_TCPV6 if fr[i].t.v6 else FO_GSO_TCPV4,
                                  fr[i].t.hdrlen, gr[g].gso_size, fr[i].t.l4, 16)
                    o += FO_VNET_HDR_LEN
                    memcpy(o, f, fr[i].t.hdrlen + fr[i].t.payload)
                    o += fr[i].t.hdrlen + fr[i].t.payload
                    j = fr[i].next
                    while j >= 0:
                        fj = base + offsets[j] + headroom
                        memcpy(o, fj + fr[j].t.hdrlen, fr[j].t.payload)
                        o += fr[j].t.payload
                        if fj[fr[j].t.l4 + 13] & FO_TCP_PSH:
                            (arena + apos + FO_VNET_HDR_LEN)[fr[i].t.l4 + 13] |= FO_TCP_PSH
                        j = fr[j].next
                    o = arena + apos + FO_VNET_HDR_LEN
                    if fr[i].t.v6:
                        fo_put_be16(o + fr[i].t.l2 + 4, thl + gr[g].total)
                    else:
                        fo_put_be16(o + fr[i].t.l2 + 2, l3len + thl + gr[g].total)
                        fo_ipv4_csum(o + fr[i].t.l2, l3len)
                    th = o + fr[i].t.l4
                    th[16] = 0
                    th[17] = 0
                    fo_put_host16(th + 16, fo_csum_fold(
                        fo_pseudo(o + fr[i].t.l2, fr[i].t.v6, thl + gr[g].total)))
                    out[k].ptr = arena + apos
                    out[k].len = <uint32_t>need
                    k += 1
                    apos += need
                    gr[g].emitted = 1
                    continue
                gr[g].emitted = 2
        # pass through alone
        fo_vnet_write(f - FO_VNET_HDR_LEN, FO_F_DATA_VALID if fr[i].csum == 1 else 0,
                      FO_GSO_NONE, 0, 0, 0, 0)
        out[k].ptr = f - FO_VNET_HDR_LEN
        out[k].len = lengths[i] + FO_VNET_HDR_LEN
        k += 1
    return k


cdef inline void fo_gro_fix(uint8_t *f, const fo_tcpinfo *t, uint32_t total) noexcept nogil:
    """Headers of a coalesced frame at f (payload `total` bytes): IP length (+ IPv4 header
    checksum) and, in the TCP checksum field, the folded pseudo-header sum (CHECKSUM_PARTIAL)."""
    cdef uint32_t thl = t.hdrlen - t.l4
    cdef uint32_t l3len = t.l4 - t.l2
    cdef uint8_t *th = f + t.l4
    if t.v6:
        fo_put_be16(f + t.l2 + 4, thl + total)
    else:
        fo_put_be16(f + t.l2 + 2, l3len + thl + total)
        fo_ipv4_csum(f + t.l2, l3len)
    th[16] = 0
    th[17] = 0
    fo_put_host16(th + 16, fo_csum_fold(fo_pseudo(f + t.l2, t.v6, thl + total)))


# fo_gro_iov: the same coalescing as fo_gro without copying payload: a run is written with
# writev, its first frame's headers patched in place (virtio header in its headroom), then
# the payload of every later frame where it was decrypted.
#
#   write k:  iov[0] = [vnet][eth ip tcp | payload f0]     (f0 in place, headers patched)
#             iov[1] = [payload f1]   iov[2] = [payload f3] ...
#   pass-through frame: one iovec, [vnet NONE][frame], as fo_gro writes it

cdef int fo_gro_iov(uint8_t *base, const uint32_t *offsets, const uint32_t *lengths, int n,
                    size_t headroom, iovec *iov, int *counts, bint verify) noexcept nogil:
    """Coalesce like fo_gro, into writes of iovecs: write k is iov[sum(counts[:k])...] with
    counts[k] entries (iov needs room for n, counts for n). Returns k or FO_E_ARG."""
    cdef fo_groframe fr[FO_GRO_MAX_FRAMES]
    cdef fo_group gr[FO_GRO_MAX_FRAMES]
    cdef int i, j, g, k = 0, m = 0
    cdef uint8_t *f
    cdef uint8_t *fj
    if n < 0 or n > FO_GRO_MAX_FRAMES or headroom < FO_VNET_HDR_LEN:
        return FO_E_ARG
    fo_gro_group(base, offsets, lengths, n, headroom, fr, gr, verify)
    for i in range(n):
        f = base + offsets[i] + headroom
        g = fr[i].group
        if g >= 0 and gr[g].count > 1:
            if gr[g].emitted:
                continue
            gr[g].emitted = 1
            fo_vnet_write(f - FO_VNET_HDR_LEN, FO_F_NEEDS_CSUM,
                          FO_GSO_TCPV6 if fr[i].t.v6 else FO_GSO_TCPV4,
                          fr[i].t.hdrlen, gr[g].gso_size, fr[i].t.l4, 16)
            iov[m].iov_base = f - FO_VNET_HDR_LEN
            iov[m].iov_len = FO_VNET_HDR_LEN + fr[i].t.hdrlen + fr[i].t.payload
            counts[k] = 1
            m += 1
            j = fr[i].next
            while j >= 0:
                fj = base + offsets[j] + headroom
                iov[m].iov_base = fj + fr[j].t.hdrlen
                iov[m].iov_len = fr[j].t.payload
                m += 1
                counts[k] += 1
                if fj[fr[j].t.l4 + 13] & FO_TCP_PSH:
                    f[fr[i].t.l4 + 13] |= FO_TCP_PSH
                j = fr[j].next
            fo_gro_fix(f, &fr[i].t, gr[g].total)
            k += 1
            continue
        fo_vnet_write(f - FO_VNET_HDR_LEN, FO_F_DATA_VALID if fr[i].csum == 1 else 0,
                      FO_GSO_NONE, 0, 0, 0, 0)
        iov[m].iov_base = f - FO_VNET_HDR_LEN
        iov[m].iov_len = lengths[i] + FO_VNET_HDR_LEN
        counts[k] = 1
        m += 1
        k += 1
    return k


# --- Python-visible wrappers (tests, benchmarks, Python-side slow paths) ---------------------

def tso_split_into(const uint8_t[::1] packet not None, uint8_t[::1] buf not None,
                   uint32_t[::1] offsets not None, uint32_t[::1] lengths not None,
                   size_t start=0, size_t headroom=0, size_t tailroom=0,
                   size_t max_frame=0) -> int:
    """fo_tso_split over Python buffers (offsets/lengths: array('I') of >= 1 entries).

    Returns the number of frames written; raises OffloadError for a rejected packet.
    """
    cdef int rc
    cdef int max_out = <int>min(offsets.shape[0], lengths.shape[0], FO_TSO_MAX_SEGS)
    cdef const uint8_t *p = &packet[0] if packet.shape[0] else NULL
    cdef uint8_t *b = &buf[0] if buf.shape[0] else NULL
    if max_out < 1 or b == NULL:
        raise ValueError("need at least one offsets/lengths entry and a non-empty buffer")
    if p == NULL:
        raise OffloadError(FO_E_SHORT)
    with nogil:
        rc = fo_tso_split(p, <size_t>packet.shape[0], b, <size_t>buf.shape[0], start,
                          headroom, tailroom, max_frame, &offsets[0], &lengths[0], max_out)
    if rc < 0:
        raise OffloadError(rc)
    return rc


def tso_split(const uint8_t[::1] packet not None, size_t max_frame=0) -> list:
    """Split one vnet_hdr TAP read into standalone Ethernet frames (list of bytes)."""
    import array
    cdef size_t cap = <size_t>packet.shape[0] + FO_TSO_MAX_SEGS * FO_MAX_HDR
    buf = bytearray(cap)
    offs = array.array("I", bytes(4 * FO_TSO_MAX_SEGS))
    lens = array.array("I", bytes(4 * FO_TSO_MAX_SEGS))
    n = tso_split_into(packet, buf, offs, lens, 0, 0, 0, max_frame)
    return [bytes(buf[offs[i]:offs[i] + lens[i]]) for i in range(n)]


def tso_split_inplace(uint8_t[::1] packet not None, size_t max_frame=0) -> list:
    """fo_tso_inplace + fo_tso_next over a writable buffer (clobbered): the frames, as bytes,
    that the data plane seals straight out of the TAP read buffer. Same frames and errors as
    tso_split."""
    cdef fo_tso s
    cdef int rc
    cdef uint32_t i, ln
    cdef uint8_t *seg
    if packet.shape[0] == 0:
        raise OffloadError(FO_E_SHORT)
    rc = fo_tso_inplace(&packet[0], <size_t>packet.shape[0], max_frame, FO_TSO_MAX_SEGS, &s)
    if rc < 0:
        raise OffloadError(rc)
    res = []
    for i in range(<uint32_t>rc):
        seg = fo_tso_next(&s, i, &ln)
        res.append(<bytes>seg[:ln])
    return res


def gro_coalesce_into(uint8_t[::1] buf not None, const uint32_t[::1] offsets not None,
                      const uint32_t[::1] lengths not None, size_t headroom,
                      uint8_t[::1] arena not None, bint verify=True) -> list:
    """fo_gro over a data-plane batch: frame i at buf[offsets[i] + headroom:][:lengths[i]].

    Returns what to write to the TAP, in order, as (where, offset, length) tuples: where 0 =
    buf (a frame passing through, its virtio header written in place at offset), 1 = arena
    (a coalesced super-frame). Frames are bounds-checked first (ValueError).
    """
    cdef Py_ssize_t n = offsets.shape[0]
    cdef Py_ssize_t i
    cdef int k
    cdef fo_span spans[FO_GRO_MAX_FRAMES]
    cdef size_t cap = <size_t>buf.shape[0]
    cdef uint8_t *b = &buf[0] if cap else NULL
    cdef uint8_t *a = &arena[0] if arena.shape[0] else NULL
    if lengths.shape[0] != n:
        raise ValueError("offsets and lengths differ in length")
    if n > FO_GRO_MAX_FRAMES or headroom < FO_VNET_HDR_LEN:
        raise OffloadError(FO_E_ARG)
    for i in range(n):
        if offsets[i] > cap or headroom + lengths[i] > cap - offsets[i]:
            raise ValueError(f"frame {i} exceeds the {cap}-byte buffer")
    if n == 0:
        return []
    with nogil:
        k = fo_gro(b, &offsets[0], &lengths[0], <int>n, headroom, a,
                   <size_t>arena.shape[0], spans, FO_GRO_MAX_FRAMES, verify)
    if k < 0:
        raise OffloadError(k)
    res = []
    for i in range(k):
        if a != NULL and spans[i].ptr >= a and spans[i].ptr < a + arena.shape[0]:
            res.append((1, <size_t>(spans[i].ptr - a), spans[i].len))
        else:
            res.append((0, <size_t>(spans[i].ptr - b), spans[i].len))
    return res


def gro_coalesce_iov(frames, bint verify=True) -> list:
    """fo_gro_iov over frames laid out like gro_coalesce's batch; each result is what one
    writev hands the TAP (its iovecs joined: virtio_net_hdr + frame, bytes)."""
    import array
    cdef size_t headroom = 16
    cdef Py_ssize_t n = len(frames)
    cdef size_t pos = 0
    cdef int k, i, j, m = 0
    cdef iovec iov[FO_GRO_MAX_FRAMES]
    cdef int counts[FO_GRO_MAX_FRAMES]
    cdef uint8_t[::1] b
    cdef uint32_t[::1] ov
    cdef uint32_t[::1] lv
    if n > FO_GRO_MAX_FRAMES:
        raise OffloadError(FO_E_ARG)
    if n == 0:
        return []
    blobs = [bytes(f) for f in frames]
    buf = bytearray(sum(len(f) for f in blobs) + n * headroom)
    offs = array.array("I", bytes(4 * n))
    lens = array.array("I", bytes(4 * n))
    for i, fb in enumerate(blobs):
        offs[i] = pos
        lens[i] = len(fb)
        buf[pos + headroom:pos + headroom + len(fb)] = fb
        pos += headroom + len(fb)
    b = buf
    ov = offs
    lv = lens
    with nogil:
        k = fo_gro_iov(&b[0], &ov[0], &lv[0], <int>n, headroom, iov, counts, verify)
    if k < 0:
        raise OffloadError(k)
    res = []
    for i in range(k):
        parts = []
        for j in range(counts[i]):
            parts.append(<bytes>(<uint8_t *>iov[m].iov_base)[:iov[m].iov_len])
            m += 1
        res.append(b"".join(parts))
    return res


def gro_coalesce(frames, bint verify=True, arena_size=None) -> list:
    """Coalesce decrypted Ethernet frames; each result is virtio_net_hdr + frame (bytes).

    Lays the frames out like the data plane's batch (16 bytes of headroom each) and runs
    gro_coalesce_into. arena_size: bytes for coalesced output (default: enough for all).
    """
    import array
    cdef size_t headroom = 16
    cdef Py_ssize_t n = len(frames)
    cdef size_t pos = 0
    if n > FO_GRO_MAX_FRAMES:
        raise OffloadError(FO_E_ARG)
    if n == 0:
        return []
    blobs = [bytes(f) for f in frames]
    total = sum(len(f) for f in blobs)
    buf = bytearray(total + n * headroom)
    arena = bytearray(total + n * FO_VNET_HDR_LEN if arena_size is None else arena_size)
    offs = array.array("I", bytes(4 * n))
    lens = array.array("I", bytes(4 * n))
    for i, fb in enumerate(blobs):
        offs[i] = pos
        lens[i] = len(fb)
        buf[pos + headroom:pos + headroom + len(fb)] = fb
        pos += headroom + len(fb)
    spans = gro_coalesce_into(buf, offs, lens, headroom, arena, verify)
    return [bytes((arena if where else buf)[off:off + ln]) for where, off, ln in spans]
