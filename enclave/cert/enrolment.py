"""Wire formats shared by the agent and the platform's enrolment API (one home for them).

Enrolment token (printed by `enclave platform keys create`, given to `enclave enrol`):

    "enclave1-" + base64url(JSON {"u": platform URL, "p": SPKI pin, "k": key id, "s": secret})

    u  https://HOST:PORT, the address agents use
    p  hex SHA-256 of the platform TLS certificate's SubjectPublicKeyInfo; the agent refuses any
       other server key, before sending anything (no trust on first use)
    k  the enrolment key's id (public, lets the platform find the row)
    s  32 random bytes, base64url; the platform stores only SHA-256(secret)

Signed system request (fetch a certificate after approval, renew), JSON body:

    {"name": N, "action": "fetch"|"renew", "timestamp": unix seconds, "nonce": b64url(16 bytes),
     "signature": b64(Ed25519 over system_request_message(...))}

    message = b"enclave-system-request-v1\\n" + f"{action}\\n{name}\\n{timestamp}\\n{nonce}\\n"

The platform accepts a timestamp within SYSTEM_REQUEST_MAX_SKEW of its clock and each nonce once.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

TOKEN_PREFIX = "enclave1-"
MAX_TOKEN_CHARS = 2048
MAX_TOKEN_URLS = 16  # platform URLs one token may carry (one per node)
SECRET_BYTES = 32
SYSTEM_REQUEST_MAX_SKEW = 300  # seconds
SYSTEM_REQUEST_ACTIONS = ("fetch", "renew")
_REQUEST_DOMAIN = b"enclave-system-request-v1\n"

# HTTP API paths (the platform's routes and the agent's client both use these)
PATH_ENROL = "/v1/enrol"
PATH_SYSTEM_CERT = "/v1/system/certificate"
PATH_CA = "/v1/ca"
PATH_CRL = "/v1/crl"


class TokenError(ValueError):
    """An enrolment token that cannot be parsed."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"bad base64url: {exc}") from None


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "Invalid IPv6 URL" for an unbalanced "["
        raise TokenError(f"enrolment token has an invalid platform URL {url!r}") from None
    if parts.scheme != "https" or not parts.hostname:
        raise TokenError(f"enrolment token has an invalid platform URL {url!r}")


@dataclass(frozen=True)
class EnrolmentToken:
    """url: the platform's first URL ("u"); more: its other nodes' URLs ("us", all of them,
    written only when there are several; tokens without it carry one URL)."""

    url: str
    pin: str
    key_id: str
    secret: bytes
    more: tuple[str, ...] = ()

    @property
    def urls(self) -> tuple[str, ...]:
        """Every URL of the platform, the first first."""
        return (self.url, *(u for u in self.more if u != self.url))

    def encode(self) -> str:
        body: dict[str, object] = {"u": self.url, "p": self.pin, "k": self.key_id,
                                   "s": b64url(self.secret)}
        if len(self.urls) > 1:
            body["us"] = list(self.urls)
        return TOKEN_PREFIX + b64url(json.dumps(body, separators=(",", ":")).encode())

    @classmethod
    def decode(cls, text: str) -> EnrolmentToken:
        text = text.strip()
        if len(text) > MAX_TOKEN_CHARS or not text.startswith(TOKEN_PREFIX):
            raise TokenError("not an enclave enrolment token (expected 'enclave1-...')")
        try:
            body = json.loads(unb64url(text[len(TOKEN_PREFIX) :]))
            url, pin, key_id = body["u"], body["p"], body["k"]
            secret = unb64url(body["s"])
            more = body.get("us", [])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TokenError(f"malformed enrolment token: {exc}") from None
        except RecursionError:  # JSON nested too deep for the decoder
            raise TokenError("malformed enrolment token: nested too deeply") from None
        if not all(isinstance(v, str) for v in (url, pin, key_id)) or not isinstance(more, list) \
                or len(more) > MAX_TOKEN_URLS or not all(isinstance(u, str) for u in more):
            raise TokenError("malformed enrolment token: wrong field types")
        for u in (url, *more):
            _check_url(u)
        if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
            raise TokenError("enrolment token has an invalid platform fingerprint")
        if len(secret) != SECRET_BYTES:
            raise TokenError("enrolment token has an invalid secret")
        return cls(url, pin, key_id, secret, tuple(u for u in more if u != url))


def system_request_message(action: str, name: str, timestamp: int, nonce: str) -> bytes:
    return _REQUEST_DOMAIN + f"{action}\n{name}\n{timestamp}\n{nonce}\n".encode()
