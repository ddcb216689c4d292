"""Signed intent statements (pure: bytes and ``now`` in, statements out).

An intent statement says "system FROM wants to talk to system TO". The agent signs its own with
its system key (`enclave intent add`); for tag policies the CA signs a statement with ``op``
"policy" that the agent verifies and counter-signs with an "add" statement naming the policy.

Wire form (HTTPS body of POST /v1/intents, and the control channel's "intent" message)::

    {"statement": b64(canonical JSON), "signature": b64(Ed25519(DOMAIN || canonical JSON))}

    canonical JSON = json.dumps(obj, sort_keys=True, separators=(",", ":")), ASCII, with
    obj = {"v": 1,
           "op": "add" | "remove" | "list" | "policy",
           "from": "V88RY",              # the signer (a system; for "policy": the subject)
           "to": "K2M4Q" | "",           # the peer ("" for "list")
           "iat": 1764193000,            # issued at, unix seconds
           "exp": 1764279400 | null,     # optional expiry of the intent ("add", "policy")
           "nonce": "b64url 16 bytes",   # each statement is accepted once
           "policy": "web-db" | null}    # the tag policy an "add" counter-signs

Freshness: the platform accepts a statement whose ``iat`` is within INTENT_MAX_SKEW of its clock
and whose nonce it has not seen; a stored "add" stays valid until ``exp`` (or forever).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from enclave.cert.keys import Ed25519PrivateKey, sign, verify
from enclave.cert.names import is_valid_system_name

INTENT_VERSION = 1
INTENT_OPS = ("add", "remove", "list", "policy")
INTENT_MAX_SKEW = 300  # seconds
MAX_STATEMENT_BYTES = 1024
_DOMAIN = b"enclave-intent-v1\n"
_POLICY_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class IntentError(ValueError):
    """A malformed, badly signed, stale or otherwise unacceptable intent statement."""


def is_valid_policy_name(name: str) -> bool:
    return bool(_POLICY_RE.match(name))


@dataclass(frozen=True)
class IntentStatement:
    op: str
    from_name: str
    to_name: str
    iat: int
    exp: int | None = None
    nonce: str = ""
    policy: str | None = None

    @classmethod
    def new(
        cls,
        op: str,
        from_name: str,
        to_name: str,
        now: int,
        *,
        exp: int | None = None,
        policy: str | None = None,
    ) -> IntentStatement:
        nonce = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
        st = cls(op, from_name, to_name, now, exp, nonce, policy)
        st.check_shape()
        return st

    def to_obj(self) -> dict[str, Any]:
        return {
            "v": INTENT_VERSION,
            "op": self.op,
            "from": self.from_name,
            "to": self.to_name,
            "iat": self.iat,
            "exp": self.exp,
            "nonce": self.nonce,
            "policy": self.policy,
        }

    def canonical(self) -> bytes:
        return json.dumps(self.to_obj(), sort_keys=True, separators=(",", ":")).encode("ascii")

    def check_shape(self) -> None:
        if self.op not in INTENT_OPS:
            raise IntentError(f"unknown intent op {self.op!r}")
        if not is_valid_system_name(self.from_name):
            raise IntentError("bad 'from' system name")
        if self.op == "list":
            if self.to_name:
                raise IntentError("'list' takes no peer")
        elif not is_valid_system_name(self.to_name):
            raise IntentError("bad 'to' system name")
        elif self.to_name == self.from_name:
            raise IntentError("a system cannot hold intent for itself")
        if self.policy is not None and not is_valid_policy_name(self.policy):
            raise IntentError("bad policy name")
        if self.op == "policy" and self.policy is None:
            raise IntentError("a policy statement must name its policy")
        if self.exp is not None and self.exp <= self.iat:
            raise IntentError("intent expires before it is issued")
        if not 16 <= len(self.nonce) <= 64:
            raise IntentError("bad nonce")

    def expired(self, now: int) -> bool:
        return self.exp is not None and now >= self.exp


def _int(obj: dict[str, Any], key: str, optional: bool = False) -> int | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**40:
        raise IntentError(f"bad field {key!r}")
    return value


def parse_statement(raw: bytes) -> IntentStatement:
    """Parse canonical statement bytes (no signature check)."""
    if len(raw) > MAX_STATEMENT_BYTES:
        raise IntentError("intent statement too large")
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        raise IntentError("intent statement is not JSON") from None
    if not isinstance(obj, dict) or obj.get("v") != INTENT_VERSION:
        raise IntentError("unsupported intent statement version")
    fields = ("op", "from", "to", "nonce")
    if not all(isinstance(obj.get(f), str) for f in fields):
        raise IntentError("intent statement lacks a field")
    policy = obj.get("policy")
    if policy is not None and not isinstance(policy, str):
        raise IntentError("bad field 'policy'")
    iat = _int(obj, "iat")
    assert iat is not None
    st = IntentStatement(
        obj["op"], obj["from"], obj["to"], iat, _int(obj, "exp", True), obj["nonce"], policy
    )
    st.check_shape()
    if st.canonical() != raw:
        raise IntentError("intent statement is not in canonical form")
    return st


def encode_signed(st: IntentStatement, key: Ed25519PrivateKey) -> dict[str, str]:
    raw = st.canonical()
    return {
        "statement": base64.b64encode(raw).decode("ascii"),
        "signature": base64.b64encode(sign(key, _DOMAIN + raw)).decode("ascii"),
    }


def decode_signed(
    obj: object, public_key: bytes | None = None
) -> tuple[IntentStatement, bytes, bytes]:
    """Parse {"statement", "signature"}; verify the signature when ``public_key`` is given.

    Returns (statement, canonical bytes, signature).
    """
    if not isinstance(obj, dict):
        raise IntentError("signed intent must be an object")
    st_b64, sig_b64 = obj.get("statement"), obj.get("signature")
    if not isinstance(st_b64, str) or not isinstance(sig_b64, str) or len(st_b64) > 2048:
        raise IntentError("signed intent lacks statement or signature")
    try:
        raw = base64.b64decode(st_b64, validate=True)
        sig = base64.b64decode(sig_b64, validate=True)
    except (binascii.Error, ValueError):
        raise IntentError("signed intent is not valid base64") from None
    st = parse_statement(raw)
    if public_key is not None and not verify_signature(public_key, raw, sig):
        raise IntentError("bad intent signature")
    return st, raw, sig


def verify_signature(public_key: bytes, raw: bytes, sig: bytes) -> bool:
    return verify(public_key, sig, _DOMAIN + raw)


def check_fresh(st: IntentStatement, now: int) -> None:
    if abs(now - st.iat) > INTENT_MAX_SKEW:
        raise IntentError("intent statement timestamp too far from platform time (check clock)")
