"""Wire constants, layouts and parsers (table cases + fuzzing)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.proto import wire as W


@pytest.mark.parametrize(
    ("case", "value", "expected"),
    [
        (1, W.DATA_HEADER_SIZE, 16),
        (2, W.DATA_OVERHEAD, 32),
        (3, W.INIT_FIXED_SIZE, 180),  # 148 + MAC1 + MAC2
        (4, W.RESPONSE_FIXED_SIZE, 144),
        (5, W.CONFIRM_SIZE, 72),
        (6, W.MAX_HANDSHAKE_SIZE, 1428),
        (7, W.tap_mtu(1500), 1426),
        (8, W.tap_mtu(1500, ipv6=True), 1406),
        (9, W.MAX_HANDSHAKE_SIZE <= 1500 - W.IPV6_UDP_OVERHEAD, True),
        (10, W.MAX_CONTROL_SIZE, 41),
    ],
)
def test_sizes(case: int, value: object, expected: object) -> None:
    assert value == expected


def test_transport_header_golden_bytes() -> None:
    hdr = W.pack_transport_header(W.MSG_DATA, 0x11223344, 0x0102030405060708)
    assert hdr.hex() == "04000000" "44332211" "0807060504030201"
    parsed = W.unpack_transport_header(hdr + bytes(16))
    assert parsed == W.TransportHeader(W.MSG_DATA, 0x11223344, 0x0102030405060708)
    assert W.aead_nonce(W.NONCE_DOMAIN_DATA, 1).hex() == "00000000" "0100000000000000"


def _init() -> W.HandshakeInit:
    return W.HandshakeInit(7, 99, b"c" * 32, b"e" * 32, 1, b"CERT", b"s" * 64)


def test_handshake_roundtrips() -> None:
    i = _init()
    assert W.decode_init(i.encode()) == i
    r = W.HandshakeResponse(8, 7, b"C" * 32, b"E" * 32, 0, W.Cipher.CHACHA20_POLY1305, b"CERT2",
                            b"S" * 64)
    assert W.decode_response(r.encode()) == r
    c = W.HandshakeConfirm(8, b"x" * 64)
    assert W.decode_confirm(c.encode()) == c
    for ctl in (W.Control(W.CTRL_KEEPALIVE, 1), W.Control(W.CTRL_CLOSE, 2),
                W.Control(W.CTRL_PROBE, 2**64 - 1), W.Control(W.CTRL_PROBE_REPLY, 5)):
        assert W.decode_control(ctl.encode()) == ctl


@pytest.mark.parametrize(
    ("case", "mutate"),
    [
        (1, lambda b: b[:-1]),  # truncated
        (2, lambda b: b + b"\0"),  # trailing byte
        (3, lambda b: b[:1] + b"\1" + b[2:]),  # reserved byte set
        (4, lambda b: b"\2" + b[1:]),  # wrong type
        (5, lambda b: b[:82] + b"\0\0" + b[84:]),  # zero cert length
        (6, lambda b: b[:82] + b"\xff\xff" + b[84:]),  # cert length beyond the message
        (7, lambda b: b + bytes(W.MAX_HANDSHAKE_SIZE)),  # oversized
        (8, lambda b: b""),
    ],
)
def test_init_rejects(case: int, mutate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(W.WireError):
        W.decode_init(mutate(_init().encode()))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1600))
def test_parsers_raise_only_wire_error(data: bytes) -> None:
    for parse in (W.decode_init, W.decode_response, W.decode_confirm, W.decode_control,
                  W.unpack_transport_header, W.message_type):
        try:
            parse(data)
        except W.WireError:
            pass
