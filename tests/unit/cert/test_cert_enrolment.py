"""Enrolment token and signed-request formats (enclave.cert.enrolment)."""

from __future__ import annotations

import json

import pytest

from enclave.cert.enrolment import (
    EnrolmentToken,
    TokenError,
    b64url,
    new_secret,
    system_request_message,
)

PIN = "ab" * 32


def test_token_round_trip() -> None:
    tok = EnrolmentToken("https://198.18.0.1:8443", PIN, "k1", new_secret())
    text = tok.encode()
    assert text.startswith("enclave1-") and " " not in text
    assert EnrolmentToken.decode(text) == tok
    assert EnrolmentToken.decode(f"  {text}\n") == tok


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"u": "http://x:1", "p": PIN, "k": "k", "s": b64url(b"s" * 32)}, "URL"),
        ({"u": "https://x:1", "p": "zz", "k": "k", "s": b64url(b"s" * 32)}, "fingerprint"),
        ({"u": "https://x:1", "p": PIN, "k": "k", "s": b64url(b"s" * 31)}, "secret"),
        ({"u": "https://x:1", "p": PIN, "k": 5, "s": b64url(b"s" * 32)}, "types"),
        ({"u": "https://x:1", "p": PIN}, "malformed"),
    ],
)
def test_bad_tokens(body: dict[str, object], why: str) -> None:
    with pytest.raises(TokenError, match=why):
        EnrolmentToken.decode("enclave1-" + b64url(json.dumps(body).encode()))


@pytest.mark.parametrize("text", ["", "enclave2-abc", "enclave1-%%%", "enclave1-" + "A" * 3000])
def test_garbage_tokens(text: str) -> None:
    with pytest.raises(TokenError):
        EnrolmentToken.decode(text)


def test_request_message_binds_every_field() -> None:
    base = system_request_message("renew", "V88RY", 100, "n")
    variants = [
        system_request_message("fetch", "V88RY", 100, "n"),
        system_request_message("renew", "V88RZ", 100, "n"),
        system_request_message("renew", "V88RY", 101, "n"),
        system_request_message("renew", "V88RY", 100, "m"),
    ]
    assert all(v != base for v in variants)
    assert base.startswith(b"enclave-system-request-v1\n")
