# Identity binding: may this authentic frame from peer P claim the source it claims?
# (included by _fastpath.pyx after _fp_epoch.pxi; _fp_rx.pxi calls fp_ident_check for every
# frame that passed the AEAD). Pure byte work: no GIL, no allocation, no Python, and it never
# reads outside frame[0:n]. P's MAC, bridging flag and dp_ident (overlay IPv4, IPv6 list,
# gateway routes) come from its certificate, installed with its keys (DataPlane.install).
#
#   what the frame claims                       allowed                              verdict
#   -------------------------------------------------------------------------------------------
#   Ethernet source                             P's MAC (a bridging P: any unicast)  ID_MAC
#     [802.1Q / 802.1ad / 0x9100 tags: any number skipped, the rules below hold inside them]
#   ARP (only htype 1, ptype IPv4, 6/4 lengths)
#     sender hardware address                   P's MAC (bridging P: or the frame's  ID_ARP
#                                               Ethernet source)
#     sender protocol address                   P's overlay IPv4, inside one of P's
#                                               gateway routes, or 0.0.0.0 (RFC 5227
#                                               probe)
#   IPv4 source                                 P's overlay IPv4, inside one of P's   ID_IP
#                                               routes, or 0.0.0.0 for UDP to port 67
#                                               (DHCP discover / request)
#   IPv6 source                                 fe80::/64 + modified EUI-64 of P's    ID_IP
#                                               MAC (RFC 4291 2.5.1; bridging P: or of
#                                               the frame's Ethernet source), one of
#                                               P's certified overlay IPv6, or ::
#                                               (duplicate address detection)
#     Neighbour Advertisement (ICMPv6 136,      target = one of the addresses above   ID_IP
#     after any extension headers)              (never ::); every Target Link-Layer
#                                               Address option = the MAC rule of ARP
#   any other EtherType (non-IP protocols,      the Ethernet source rule only         PASS
#   custom EtherTypes, multicast L2)
#
# The agent's TAP generates its link-local address from its (certified) MAC: TapDevice sets
# addr_gen_mode eui64 (enclave/dataplane/tap.py), so a stable-privacy or random link-local
# is not certified and does not cross.
#
# Truncation rule: a frame whose EtherType announces ARP, IPv4 or IPv6 (or a VLAN tag) but
# which ends before the fields its rule reads cannot show its source and is dropped with that
# family's verdict (a cut tag: ID_IP). A Neighbour Advertisement whose IPv6 payload length
# disagrees with the frame, or with an option of length 0 or past its end, is dropped too
# (RFC 4861 4.6 makes receivers discard it anyway). A non-first IPv6 fragment passes after the
# source check: it holds no ICMPv6 header, and RFC 6980 has hosts ignore fragmented ND.

cdef enum:
    FP_ID_PASS = 0
    FP_ID_MAC = 1               # counted as rx_spoofed
    FP_ID_IP = 2                # rx_ip_spoofed
    FP_ID_ARP = 3               # rx_arp_spoofed
    FP_ETH_ARP = 0x0806
    FP_ETH_QINQ = 0x88A8
    FP_ETH_QINQ_OLD = 0x9100
    FP_ARP_LEN = 28             # Ethernet/IPv4 ARP: htype ptype hlen plen op sha spa tha tpa
    FP_IP4_LEN = 20
    FP_IP6_LEN = 40
    FP_IPPROTO_UDP = 17
    FP_IPPROTO_ICMPV6 = 58
    FP_IP6_HOPOPTS = 0
    FP_IP6_ROUTING = 43
    FP_IP6_FRAGMENT = 44
    FP_IP6_AH = 51
    FP_IP6_DSTOPTS = 60
    FP_DHCP_SERVER_PORT = 67
    FP_ICMPV6_NA = 136
    FP_NA_LEN = 24              # type code checksum flags target
    FP_ND_OPT_TLLA = 2

IDENT_PASS: int = FP_ID_PASS
IDENT_MAC_SPOOFED: int = FP_ID_MAC
IDENT_IP_SPOOFED: int = FP_ID_IP
IDENT_ARP_SPOOFED: int = FP_ID_ARP
IDENT_VERDICTS: dict = {FP_ID_PASS: "pass", FP_ID_MAC: "mac_spoofed",
                        FP_ID_IP: "ip_spoofed", FP_ID_ARP: "arp_spoofed"}


cdef inline uint32_t fi_be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline bint fi_mac_ok(uint64_t claimed, uint64_t mac, uint64_t src,
                           bint bridging) noexcept nogil:
    """A MAC inside the payload (ARP sender, ND option) is P's, or a bridging P's frame
    source."""
    return claimed == mac or (bridging and claimed == src)


cdef inline bint fi_ip4_ok(const dp_ident *ident, uint32_t a) noexcept nogil:
    """a (host byte order) is P's overlay IPv4 or inside one of its gateway routes."""
    cdef int i
    if ident == NULL:
        return False
    if a != 0 and a == ident.ip4:
        return True
    for i in range(ident.nroutes):
        if (a & ident.routes[i].mask) == ident.routes[i].net:
            return True
    return False


cdef inline bint fi_eui64_of(const uint8_t *iid, uint64_t mac) noexcept nogil:
    """iid (8 bytes) is the modified EUI-64 interface identifier of mac (RFC 4291 2.5.1)."""
    return (iid[0] == (((mac >> 40) & 0xFF) ^ 0x02) and iid[1] == ((mac >> 32) & 0xFF)
            and iid[2] == ((mac >> 24) & 0xFF) and iid[3] == 0xFF and iid[4] == 0xFE
            and iid[5] == ((mac >> 16) & 0xFF) and iid[6] == ((mac >> 8) & 0xFF)
            and iid[7] == (mac & 0xFF))


cdef inline bint fi_unspecified6(const uint8_t *a) noexcept nogil:
    cdef int i
    for i in range(16):
        if a[i]:
            return False
    return True


cdef inline bint fi_ip6_ok(const dp_ident *ident, const uint8_t *a, uint64_t mac, uint64_t src,
                           bint bridging) noexcept nogil:
    """a is fe80::/64 + EUI-64 of P's MAC (bridging P: or of the frame source), or one of P's
    certified overlay IPv6 addresses."""
    cdef int i
    if a[0] == 0xFE and a[1] == 0x80 and (a[2] | a[3] | a[4] | a[5] | a[6] | a[7]) == 0:
        if fi_eui64_of(a + 8, mac) or (bridging and fi_eui64_of(a + 8, src)):
            return True
    if ident != NULL:
        for i in range(ident.nip6):
            if memcmp(a, ident.ip6 + 16 * i, 16) == 0:
                return True
    return False


cdef inline int fi_arp(const uint8_t *p, size_t n, const dp_ident *ident, uint64_t mac,
                       uint64_t src, bint bridging) noexcept nogil:
    cdef uint32_t spa
    if n < FP_ARP_LEN:
        return FP_ID_ARP
    if fo_be16(p) != 1 or fo_be16(p + 2) != FO_ETH_IPV4 or p[4] != 6 or p[5] != 4:
        return FP_ID_ARP
    if not fi_mac_ok(mt_mac(p + 8), mac, src, bridging):
        return FP_ID_ARP
    spa = fi_be32(p + 14)
    if spa != 0 and not fi_ip4_ok(ident, spa):
        return FP_ID_ARP
    return FP_ID_PASS


cdef inline int fi_ipv4(const uint8_t *p, size_t n, const dp_ident *ident) noexcept nogil:
    cdef uint32_t src
    cdef size_t ihl
    if n < FP_IP4_LEN:
        return FP_ID_IP
    src = fi_be32(p + 12)
    if fi_ip4_ok(ident, src):
        return FP_ID_PASS
    if src == 0 and p[9] == FP_IPPROTO_UDP and (fo_be16(p + 6) & 0x1FFF) == 0:
        ihl = (p[0] & 0x0F) * 4
        if ihl >= FP_IP4_LEN and n >= ihl + 4 and fo_be16(p + ihl + 2) == FP_DHCP_SERVER_PORT:
            return FP_ID_PASS
    return FP_ID_IP


cdef inline int fi_na(const uint8_t *p, size_t off, size_t end, const dp_ident *ident,
                      uint64_t mac, uint64_t src, bint bridging) noexcept nogil:
    """The Neighbour Advertisement at p[off:end] (end: the IPv6 payload's end, inside the
    frame) claims only P's addresses, with P's MAC."""
    cdef size_t o, olen
    if end < off + FP_NA_LEN:
        return FP_ID_IP
    if not fi_ip6_ok(ident, p + off + 8, mac, src, bridging):
        return FP_ID_IP
    o = off + FP_NA_LEN
    while o < end:
        if end - o < 2:
            return FP_ID_IP
        olen = <size_t>p[o + 1] * 8
        if olen == 0 or olen > end - o:
            return FP_ID_IP
        if p[o] == FP_ND_OPT_TLLA and (olen < 8 or not fi_mac_ok(mt_mac(p + o + 2), mac, src,
                                                                  bridging)):
            return FP_ID_IP
        o += olen
    return FP_ID_PASS


cdef inline int fi_ipv6(const uint8_t *p, size_t n, const dp_ident *ident, uint64_t mac,
                        uint64_t src, bint bridging) noexcept nogil:
    cdef size_t off = FP_IP6_LEN
    cdef size_t end
    cdef uint8_t nh
    if n < FP_IP6_LEN:
        return FP_ID_IP
    if not fi_unspecified6(p + 8) and not fi_ip6_ok(ident, p + 8, mac, src, bridging):
        return FP_ID_IP
    nh = p[6]
    while True:                           # to the upper-layer header: off grows by >= 8 a step
        if nh == FP_IP6_HOPOPTS or nh == FP_IP6_ROUTING or nh == FP_IP6_DSTOPTS:
            if n < off + 8:
                return FP_ID_IP
            nh = p[off]
            off += (<size_t>p[off + 1] + 1) * 8
        elif nh == FP_IP6_AH:
            if n < off + 8:
                return FP_ID_IP
            nh = p[off]
            off += (<size_t>p[off + 1] + 2) * 4
        elif nh == FP_IP6_FRAGMENT:
            if n < off + 8:
                return FP_ID_IP
            if fo_be16(p + off + 2) & 0xFFF8:
                return FP_ID_PASS         # not the first fragment: no ICMPv6 header here
            nh = p[off]
            off += 8
        else:
            break
    if nh != FP_IPPROTO_ICMPV6:
        return FP_ID_PASS
    if n < off + 1:
        return FP_ID_IP
    if p[off] != FP_ICMPV6_NA:
        return FP_ID_PASS
    end = FP_IP6_LEN + fo_be16(p + 4)
    if end > n:
        return FP_ID_IP
    return fi_na(p, off, end, ident, mac, src, bridging)


cdef int fp_ident_check(const uint8_t *f, size_t n, const dp_ident *ident, uint64_t mac,
                        bint bridging) noexcept nogil:
    """Verdict on frame f[0:n] from the peer with certified `mac` / `ident` (NULL: no
    certified addresses) that may bridge or not: FP_ID_PASS, or why it is dropped."""
    cdef size_t l3 = DP_ETH
    cdef uint32_t ethertype
    cdef uint64_t src
    if n < DP_ETH or f[6] & 1:
        return FP_ID_MAC
    src = mt_mac(f + 6)
    if not bridging and src != mac:
        return FP_ID_MAC
    ethertype = fo_be16(f + 12)
    while ethertype == FO_ETH_VLAN or ethertype == FP_ETH_QINQ or ethertype == FP_ETH_QINQ_OLD:
        if n < l3 + 4:
            return FP_ID_IP
        ethertype = fo_be16(f + l3 + 2)
        l3 += 4
    if ethertype == FP_ETH_ARP:
        return fi_arp(f + l3, n - l3, ident, mac, src, bridging)
    if ethertype == FO_ETH_IPV4:
        return fi_ipv4(f + l3, n - l3, ident)
    if ethertype == FO_ETH_IPV6:
        return fi_ipv6(f + l3, n - l3, ident, mac, src, bridging)
    return FP_ID_PASS


def ident_check(const uint8_t[::1] frame not None, *, peer_mac, bint bridging=False,
                overlay_ip4=None, overlay_ip6=(), routes=()) -> int:
    """Test entry point of fp_ident_check: the verdict (IDENT_*) on one decrypted Ethernet
    frame from a peer certified with these values (as DataPlane.install takes them)."""
    cdef bytes mac = bytes(peer_mac)
    cdef _Ident ident
    cdef size_t n = frame.shape[0]
    if len(mac) != 6:
        raise ValueError("peer_mac must be 6 bytes")
    ident = dp_ident_new(_ident_value(overlay_ip4, overlay_ip6, routes))
    return fp_ident_check(&frame[0] if n else NULL, n, ident.c,
                          mt_mac(<const uint8_t *><const char *>mac), bridging)
