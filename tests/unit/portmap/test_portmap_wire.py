"""PCP (RFC 6887) and NAT-PMP (RFC 6886) messages: requests byte for byte as the RFCs lay them
out, replies written by hand, and every reply that is not the answer ignored (None), never raised
on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave.discovery import portmap_wire as pw
from enclave.discovery.portmap_wire import Granted, Refused

NONCE = bytes(range(12))
PORT = 51820  # 0xca6c
V4_MAPPED = "00" * 10 + "ffff"


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# a PCP MAP success: lifetime 3600, epoch 5, UDP, internal 51820, assigned 198.18.1.1:8080
PCP_HEADER_OK = "02 81 00 00  00000e10  00000005" + "00" * 12
PCP_PAYLOAD_OK = ("000102030405060708090a0b  11 000000  ca6c 1f90" + V4_MAPPED + "c6120101")
PCP_OK = h(PCP_HEADER_OK + PCP_PAYLOAD_OK)


def test_pcp_map_request_is_laid_out_as_rfc_6887() -> None:
    got = pw.encode_pcp_map(NONCE, "198.19.1.11", PORT, 3600, external_port=PORT)
    assert got == h("02 01 0000  00000e10" + V4_MAPPED + "c613010b"
                    "000102030405060708090a0b  11 000000  ca6c ca6c" + V4_MAPPED + "00000000")
    assert len(got) == pw.PCP_HEADER_SIZE + pw.PCP_MAP_SIZE


def test_pcp_delete_is_lifetime_zero_with_the_same_nonce() -> None:
    got = pw.encode_pcp_map(NONCE, "198.19.1.11", PORT, 0)
    assert got[4:8] == bytes(4) and got[24:36] == NONCE


def test_pcp_nonce_must_be_96_bits() -> None:
    with pytest.raises(ValueError):
        pw.encode_pcp_map(b"short", "198.19.1.11", PORT, 3600)


@pytest.mark.parametrize(("case", "data", "expected"), [
    (1, PCP_OK, Granted("198.18.1.1", 8080, 3600, 5)),
    (2, PCP_OK + h("01 00 0004 deadbeef"), Granted("198.18.1.1", 8080, 3600, 5)),  # an option
    (3, h(PCP_HEADER_OK + "ffffffffffffffffffffffff" + PCP_PAYLOAD_OK[24:]), None),  # nonce
    (4, h(PCP_HEADER_OK + PCP_PAYLOAD_OK.replace("ca6c 1f90", "ca6d 1f90")), None),  # port
    (5, h(PCP_HEADER_OK + PCP_PAYLOAD_OK.replace("11 000000", "06 000000")), None),  # TCP
    (6, PCP_OK[:23], None),  # shorter than a header
    (7, PCP_OK[:-1], None),  # not a multiple of 4
    (8, b"", None),
    (9, h("02 01" + PCP_HEADER_OK[5:] + PCP_PAYLOAD_OK), None),  # R bit clear: a request
    (10, h("02 80" + PCP_HEADER_OK[5:] + PCP_PAYLOAD_OK), None),  # ANNOUNCE, not MAP
    (11, h("01" + PCP_HEADER_OK[2:] + PCP_PAYLOAD_OK), None),  # version 1
    (12, PCP_OK + bytes(1100), None),  # over the PCP maximum
    (13, h(PCP_HEADER_OK + PCP_PAYLOAD_OK.replace("1f90", "0000")), None),  # no external port
    (14, h("02 81 00 02" + PCP_HEADER_OK[11:] + PCP_PAYLOAD_OK), Refused(2)),  # NOT_AUTHORIZED
    (15, h("02 81 00 08" + PCP_HEADER_OK[11:]), Refused(8)),  # NO_RESOURCES, header only
    (16, h(PCP_HEADER_OK), None),  # success without the MAP payload
    (17, h("00 81 0001 00000007"), Refused(pw.PCP_UNSUPPORTED_VERSION)),  # a NAT-PMP server
    (18, h("00 81 0000 00000007"), None),  # NAT-PMP, not the unsupported-version answer
    (19, h("00 01 0001"), None),  # NAT-PMP request, not a response
])
def test_pcp_map_reply(case: int, data: bytes, expected: object) -> None:
    assert pw.decode_pcp_map(data, NONCE, PORT) == expected


def test_pcp_delete_acknowledged_with_lifetime_zero() -> None:
    ack = h("02 81 00 00  00000000  00000006" + "00" * 12
            + "000102030405060708090a0b 11 000000 ca6c 0000" + V4_MAPPED + "00000000")
    assert pw.decode_pcp_map(ack, NONCE, PORT) == Granted("0.0.0.0", 0, 0, 6)


def test_natpmp_requests_are_laid_out_as_rfc_6886() -> None:
    assert pw.encode_natpmp_address() == h("00 00")
    assert pw.encode_natpmp_map(PORT, 3600) == h("00 01 0000 ca6c ca6c 00000e10")
    assert pw.encode_natpmp_map(PORT, 3600, external_port=4500, tcp=True) == h(
        "00 02 0000 ca6c 1194 00000e10")
    assert pw.encode_natpmp_map(PORT, 0) == h("00 01 0000 ca6c 0000 00000000")  # delete


@pytest.mark.parametrize(("case", "data", "expected"), [
    (1, h("00 80 0000 00000007 c6120101"), (0, "198.18.1.1", 7)),
    (2, h("00 80 0003 00000007 00000000"), (3, "0.0.0.0", 7)),  # NETWORK_FAILURE
    (3, h("00 80 0000 00000007 c61201"), None),  # short
    (4, h("00 81 0000 00000007 c6120101"), None),  # a map response
    (5, h("02 80 0000 00000007 c6120101"), None),  # PCP
    (6, h("00 00"), None),  # a request
])
def test_natpmp_address_reply(case: int, data: bytes, expected: object) -> None:
    assert pw.decode_natpmp_address(data) == expected


@pytest.mark.parametrize(("case", "data", "expected"), [
    (1, h("00 81 0000 00000009 ca6c 1194 00000e10"), Granted("198.18.1.1", 4500, 3600, 9)),
    (2, h("00 81 0000 00000009 ca6d 1194 00000e10"), None),  # another internal port
    (3, h("00 82 0000 00000009 ca6c 1194 00000e10"), None),  # the TCP answer
    (4, h("00 81 0002 00000009"), Refused(2)),  # NOT_AUTHORIZED, short as servers send it
    (5, h("00 81 0000 00000009 ca6c 1194 0000"), None),  # short success
    (6, h("00 81 0000 00000009 ca6c 0000 00000e10"), None),  # no external port
    (7, h("00 81 0000 00000009 ca6c 0000 00000000"), Granted("198.18.1.1", 0, 0, 9)),  # deleted
    (8, h("00 01 0000 ca6c 1194 00000e10"), None),  # a request
    (9, h("02 81 0000 00000009 ca6c 1194 00000e10"), None),  # version 2
    (10, b"\x00", None),
])
def test_natpmp_map_reply(case: int, data: bytes, expected: object) -> None:
    assert pw.decode_natpmp_map(data, PORT, "198.18.1.1") == expected


@given(st.binary(max_size=1200))
def test_decoders_never_raise(data: bytes) -> None:
    pw.decode_pcp_map(data, NONCE, PORT)
    pw.decode_natpmp_address(data)
    pw.decode_natpmp_map(data, PORT, "198.18.1.1")


def test_renewal_is_half_the_lifetime_but_never_sooner_than_the_floor() -> None:
    assert pw.renew_after(3600) == 1800
    assert pw.renew_after(10) == pw.MIN_RENEW_S
