"""`enclave netcheck`'s verdicts (enclave.discovery.natcheck), the reflector's reply routing for
filtering tests (enclave.platform.discovery.Reflector.answer) and their wire formats."""

from __future__ import annotations

import pytest

from enclave.agent.relay_client import RelayClient
from enclave.cert.keys import generate_private_key, public_key_raw, sign
from enclave.discovery.candidates import NatBehaviour
from enclave.discovery.natcheck import Filtering, classify_filtering, nat_name
from enclave.platform.discovery import Reflector, Via
from enclave.proto import wire

NOW = 1_800_000_000
EIM, APDM, NONE = NatBehaviour.ENDPOINT_INDEPENDENT, NatBehaviour.SYMMETRIC, NatBehaviour.NONE
EIF, ADF = Filtering.ENDPOINT_INDEPENDENT, Filtering.ADDRESS_DEPENDENT
APDF, NPD = Filtering.ADDRESS_AND_PORT_DEPENDENT, Filtering.NOT_PORT_DEPENDENT


# (case, plain reply, other-port reply, other-address reply (None: not offered)) -> filtering
FILTERING = [
    (1, True, True, True, EIF),
    (2, True, True, False, ADF),
    (3, True, False, False, APDF),
    (4, True, False, None, APDF),
    (5, True, True, None, NPD),
    (6, False, False, None, Filtering.UNKNOWN),  # the path itself is dead: nothing to conclude
    (7, False, True, True, Filtering.UNKNOWN),
]


@pytest.mark.parametrize(("case", "plain", "port", "addr", "want"), FILTERING)
def test_filtering(case: int, plain: bool, port: bool, addr: bool | None,
                   want: Filtering) -> None:
    got = classify_filtering(plain, port, addr)
    assert got.behaviour is want, case
    assert (got.note is not None) == (want in (NPD, Filtering.UNKNOWN)), case


# RFC 4787 (mapping, filtering) -> the familiar (RFC 3489) name
NAMES = [
    (1, EIM, EIF, "full cone"),
    (2, EIM, ADF, "restricted cone"),
    (3, EIM, APDF, "port-restricted cone"),
    (4, EIM, NPD, "full cone or restricted cone"),
    (5, APDM, APDF, "symmetric"),
    (6, NatBehaviour.ADDRESS_DEPENDENT, APDF, "symmetric"),
    (7, APDM, EIF, "symmetric"),
    (8, NONE, EIF, "no NAT (open)"),
    (9, NONE, APDF, "no NAT, firewalled"),
    (10, NONE, Filtering.UNKNOWN, "no NAT"),
    (11, NatBehaviour.UNKNOWN, EIF, "unknown"),
    (12, EIM, Filtering.UNKNOWN, "cone (filtering unknown)"),
]


@pytest.mark.parametrize(("case", "mapping", "filtering", "name"), NAMES)
def test_nat_name(case: int, mapping: NatBehaviour, filtering: Filtering, name: str) -> None:
    assert nat_name(mapping, filtering) == name, case


def _request(key: object, msg_type: int, nonce: bytes) -> bytes:
    part = wire.reflect_signed_part(NOW, nonce, "AAAAA", msg_type)
    return part + sign(key, wire.REFLECT_DOMAIN + part)  # type: ignore[arg-type]


def test_request_types_round_trip_and_are_signed() -> None:
    key = generate_private_key()
    for t in sorted(wire.REFLECT_REQUEST_TYPES):
        req = wire.decode_reflect_request(_request(key, t, b"n" * 16))
        assert req.msg_type == t and req.signed_bytes()[0] == t
    with pytest.raises(wire.WireError):
        wire.reflect_signed_part(NOW, b"n" * 16, "AAAAA", wire.MSG_REFLECT_REPLY)
    bad = bytearray(_request(key, wire.MSG_REFLECT_REQUEST, b"n" * 16))
    bad[0] = 20
    with pytest.raises(wire.WireError):
        wire.decode_reflect_request(bytes(bad))


def test_reply_flags_round_trip_and_old_decoder_shape() -> None:
    reply = wire.encode_reflect_reply(b"x" * 16, "198.18.1.1", 40000, wire.REFLECT_FLAG_ALT_ADDR)
    assert len(reply) == wire.REFLECT_REPLY_SIZE
    assert wire.decode_reflect_reply(reply) == (b"x" * 16, "198.18.1.1", 40000)
    assert wire.reflect_reply_flags(reply) == wire.REFLECT_FLAG_ALT_ADDR
    assert wire.reflect_reply_flags(wire.encode_reflect_reply(b"x" * 16, "198.18.1.1", 1)) == 0


def test_reflector_routes_replies_by_request_type() -> None:
    key = generate_private_key()
    core = Reflector(lambda n: public_key_raw(key), clock=lambda: NOW)
    src = ("198.18.1.1", 40000)
    got = core.answer(_request(key, wire.MSG_REFLECT_REQUEST_ALT_PORT, b"1" * 16), *src)
    assert got is not None and got[1] is Via.OTHER_PORT
    assert wire.decode_reflect_reply(got[0])[1:] == src
    assert wire.reflect_reply_flags(got[0]) == 0
    # no alternate address: an ALT_ADDR request is not answered at all (from any socket)
    assert core.answer(_request(key, wire.MSG_REFLECT_REQUEST_ALT_ADDR, b"2" * 16), *src) is None
    core.alt_address = True
    got = core.answer(_request(key, wire.MSG_REFLECT_REQUEST_ALT_ADDR, b"3" * 16), *src)
    assert got is not None and got[1] is Via.OTHER_ADDRESS
    plain = core.answer(_request(key, wire.MSG_REFLECT_REQUEST, b"4" * 16), *src)
    assert plain is not None and plain[1] is Via.SAME
    assert wire.reflect_reply_flags(plain[0]) == wire.REFLECT_FLAG_ALT_ADDR
    # the TCP reflector (handle) answers only plain requests
    assert core.handle(_request(key, wire.MSG_REFLECT_REQUEST_ALT_PORT, b"5" * 16), *src) is None
    assert core.handle(_request(key, wire.MSG_REFLECT_REQUEST, b"6" * 16), *src) is not None


def test_alt_requests_need_a_valid_signature() -> None:
    key, other = generate_private_key(), generate_private_key()
    core = Reflector(lambda n: public_key_raw(key), clock=lambda: NOW, alt_address=True)
    for t in (wire.MSG_REFLECT_REQUEST_ALT_PORT, wire.MSG_REFLECT_REQUEST_ALT_ADDR):
        assert core.answer(_request(other, t, bytes([t]) * 16), "198.18.9.9", 1) is None
    # the type byte is signed: turning a signed plain request into an ALT one breaks it
    req = bytearray(_request(key, wire.MSG_REFLECT_REQUEST, b"7" * 16))
    req[0] = wire.MSG_REFLECT_REQUEST_ALT_PORT
    assert core.answer(bytes(req), "198.18.9.9", 1) is None


def test_relay_client_measures_register_rtt() -> None:
    rc = RelayClient()
    relay = ("198.18.0.11", 3479)
    (reg, _dst), = rc.add("BBBBB", relay, b"t" * 60, 10.0)
    assert rc.rtt("BBBBB") == (relay, None)
    channel = int.from_bytes(reg[4:8], "little")
    challenge = wire.pack_relay_header(wire.MSG_RELAY_CHALLENGE, channel) + b"c" * 16
    got = rc.receive(challenge, relay, 10.004)
    assert got is not None and got.kind == "send"
    rtt = rc.rtt("BBBBB")
    assert rtt is not None and rtt[1] == pytest.approx(0.004)
    assert rc.rtt("CCCCC") is None
