# ICMP "too big" back to the TAP: the tx loop's answer to a frame over the overlay MTU.
# (included by _fastpath.pyx after _fp_punt.pxi).
#
#   tx thread: TAP frame > mtu + 14 --> dp_icmp_too_big --> TAP write of
#     IPv4 DF   -> ICMP type 3 code 4 "fragmentation needed" (next-hop MTU = mtu)
#     IPv6      -> ICMPv6 type 2 "packet too big" (MTU = mtu)
#   (from the frame's destination to its source, so the sender's path-MTU discovery works)
#
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
