"""Unit tests: signed intent statements, the mutual-intent rule, the reflector core (no I/O)."""

from __future__ import annotations

import base64
import json

import pytest

from enclave.agent.discovery import classify
from enclave.cert.keys import generate_private_key, public_key_raw, sign
from enclave.discovery.candidates import NatBehaviour
from enclave.platform.discovery import Reflector
from enclave.policy.intent import (
    IntentError,
    IntentStatement,
    check_fresh,
    decode_signed,
    encode_signed,
)
from enclave.policy.mutual import IntentRow, SystemView, mutual_pairs, policy_offers
from enclave.proto import wire

NOW = 1_800_000_000


def test_signed_intent_round_trip_and_forgery() -> None:
    key, other = generate_private_key(), generate_private_key()
    st = IntentStatement.new("add", "AAAAA", "BBBBB", NOW, exp=NOW + 60)
    signed = encode_signed(st, key)
    got, raw, _sig = decode_signed(signed, public_key_raw(key))
    assert got == st and raw == st.canonical()
    with pytest.raises(IntentError, match="signature"):
        decode_signed(signed, public_key_raw(other))
    # tampering with the statement (a different peer) breaks the signature
    obj = json.loads(base64.b64decode(signed["statement"]))
    obj["to"] = "CCCCC"
    raw2 = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(IntentError, match="signature"):
        decode_signed({**signed, "statement": base64.b64encode(raw2).decode()}, public_key_raw(key))


@pytest.mark.parametrize("bad", [
    None, [], {}, {"statement": "!!", "signature": "AA=="},
    {"statement": base64.b64encode(b"not json").decode(), "signature": ""},
    {"statement": base64.b64encode(b'{"v":2}').decode(), "signature": ""},
    {"statement": base64.b64encode(b"x" * 1500).decode(), "signature": ""},
])
def test_malformed_signed_intents_rejected(bad: object) -> None:
    with pytest.raises(IntentError):
        decode_signed(bad)


def test_statement_shape_rules() -> None:
    with pytest.raises(IntentError, match="itself"):
        IntentStatement.new("add", "AAAAA", "AAAAA", NOW)
    with pytest.raises(IntentError):
        IntentStatement.new("add", "AAAAA", "bad name", NOW)
    with pytest.raises(IntentError):
        IntentStatement.new("add", "AAAAA", "BBBBB", NOW, exp=NOW - 1)
    with pytest.raises(IntentError):
        IntentStatement.new("policy", "AAAAA", "BBBBB", NOW)  # must name its policy
    # non-canonical bytes (extra spaces) are refused, so one statement has one encoding
    st = IntentStatement.new("add", "AAAAA", "BBBBB", NOW)
    loose = json.dumps(st.to_obj()).encode()
    key = generate_private_key()
    with pytest.raises(IntentError, match="canonical"):
        decode_signed({"statement": base64.b64encode(loose).decode(),
                       "signature": base64.b64encode(sign(key, loose)).decode()})
    check_fresh(st, NOW + 100)
    with pytest.raises(IntentError, match="clock"):
        check_fresh(st, NOW + 10_000)


def test_mutual_rule() -> None:
    systems = [SystemView("A", ("web",), True), SystemView("B", ("db",), True),
               SystemView("C", (), True), SystemView("D", ("db",), False)]
    one_sided = [IntentRow("A", "B")]
    assert mutual_pairs(one_sided, systems, NOW) == set()
    both = [IntentRow("A", "B"), IntentRow("B", "A")]
    assert mutual_pairs(both, systems, NOW) == {frozenset("AB")}
    expired = [IntentRow("A", "B", exp=NOW), IntentRow("B", "A")]
    assert mutual_pairs(expired, systems, NOW) == set()
    revoked = [IntentRow("A", "D"), IntentRow("D", "A")]
    assert mutual_pairs(revoked, systems, NOW) == set()
    ghost = [IntentRow("A", "ZZZZ"), IntentRow("ZZZZ", "A")]
    assert mutual_pairs(ghost, systems, NOW) == set()
    assert policy_offers("tag:web", "tag:db", systems) == {("A", "B"), ("B", "A")}


def _request(key: object, name: str = "AAAAA", ts: int = NOW, nonce: bytes = b"n" * 16) -> bytes:
    part = wire.reflect_signed_part(ts, nonce, name)
    return part + sign(key, wire.REFLECT_DOMAIN + part)  # type: ignore[arg-type]


def test_reflector_answers_only_signed_fresh_unique_requests() -> None:
    key, stranger = generate_private_key(), generate_private_key()
    core = Reflector(lambda n: public_key_raw(key) if n == "AAAAA" else None, clock=lambda: NOW)
    req = _request(key)
    reply = core.handle(req, "198.18.1.1", 40000)
    assert reply is not None and len(reply) < len(req)  # never an amplifier
    assert wire.decode_reflect_reply(reply) == (b"n" * 16, "198.18.1.1", 40000)
    assert core.handle(req, "198.18.1.1", 40000) is None  # replay
    assert core.handle(_request(stranger, nonce=b"s" * 16), "1.2.3.4", 1) is None
    assert core.handle(_request(key, name="BBBBB", nonce=b"b" * 16), "1.2.3.4", 1) is None
    assert core.handle(_request(key, ts=NOW - 3600, nonce=b"o" * 16), "1.2.3.4", 1) is None
    for junk in (b"", b"\x10", req[:-1], req + b"x", b"\x10\x01\x00\x00" + req[4:],
                 bytes(108), b"\xff" * 108):
        assert core.handle(junk, "1.2.3.4", 1) is None
    assert core.answered == 1


def test_reflector_rate_limit() -> None:
    key = generate_private_key()
    core = Reflector(lambda n: public_key_raw(key), clock=lambda: NOW)
    answered = sum(core.handle(_request(key, nonce=i.to_bytes(16, "big")), "1.2.3.4", 9)
                   is not None for i in range(100))
    assert 10 <= answered <= 25


def test_nat_classification() -> None:
    local = ["198.19.1.11"]
    assert classify(None, ("1.1.1.1", 5), local, 51820) is NatBehaviour.UNKNOWN
    assert classify(("1.1.1.1", 5), ("1.1.1.1", 6), local, 51820) is NatBehaviour.SYMMETRIC
    assert classify(("1.1.1.1", 5), ("1.1.1.1", 5), local, 51820) is \
        NatBehaviour.ENDPOINT_INDEPENDENT
    assert classify(("198.19.1.11", 51820), ("198.19.1.11", 51820), local, 51820) is \
        NatBehaviour.NONE
