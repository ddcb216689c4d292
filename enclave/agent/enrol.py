"""Enrolment, certificate fetch after approval, and renewal (wire formats: enclave.cert.enrolment).

    enrol(token)   key pair generated here -> encrypted key.pem (+ key.kek) -> CSR over TLS pinned
                   to the token -> platform -> system.crt + ca.crt + enrolment.json
                   gated key: enrolment.json says "pending"; resume() polls until approved
    renew_if_due   at 2/3 of the certificate lifetime, a request signed with the same key
                   (timestamp + nonce) -> new system.crt
"""

from __future__ import annotations

import base64
import datetime
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from enclave.agent.client import DEFAULT_TIMEOUT, PinnedClient
from enclave.agent.errors import AgentError
from enclave.agent.state import EnrolmentRecord, StateDir
from enclave.cert.ca import build_csr
from enclave.cert.enrolment import (
    PATH_ENROL,
    PATH_SYSTEM_CERT,
    EnrolmentToken,
    TokenError,
    b64url,
    system_request_message,
)
from enclave.cert.errors import CertificateError, KeyStoreError
from enclave.cert.identity import SystemIdentity
from enclave.cert.keys import Ed25519PrivateKey, generate_private_key, public_key_raw, sign
from enclave.cert.verification import verify_system_certificate

RENEW_AT_FRACTION = 2 / 3
POLL_INTERVAL = 2.0


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class EnrolResult:
    name: str
    org: str
    overlay_ip: str
    overlay_prefix: int
    mac: str
    state: str  # "active" or "pending"

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "org": self.org,
            "overlay_ip": self.overlay_ip,
            "overlay_prefix": self.overlay_prefix,
            "mac": self.mac,
            "state": self.state,
        }


def _field(reply: dict[str, object], name: str) -> str:
    value = reply.get(name)
    if not isinstance(value, str):
        raise AgentError(f"platform reply lacks {name!r}")
    return value


def _int_field(reply: dict[str, object], name: str) -> int:
    value = reply.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise AgentError(f"platform reply lacks {name!r}")
    return value


def _accept_certificate(
    state: StateDir, key: Ed25519PrivateKey, reply: dict[str, object], name: str | None
) -> SystemIdentity:
    """Check the issued certificate (our key, our name, CA-valid now) before storing it."""
    try:
        cert_pem = _field(reply, "certificate").encode()
        ca_pem = _field(reply, "ca").encode()
        ca = x509.load_pem_x509_certificate(ca_pem)
        der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
        ident = verify_system_certificate(der, ca, now=utcnow())
    except (ValueError, CertificateError) as exc:
        raise AgentError(f"platform issued an unusable certificate: {exc}") from None
    if ident.public_key != public_key_raw(key):
        raise AgentError("platform issued a certificate for a different key")
    if name is not None and ident.name != name:
        raise AgentError(f"platform issued a certificate for {ident.name}, expected {name}")
    state.save_certificates(cert_pem, ca_pem)
    return ident


def enrol(
    token_text: str,
    state: StateDir,
    *,
    hostname: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> EnrolResult:
    """Enrol this host with the platform named in the token. Raises AgentError with the reason."""
    try:
        token = EnrolmentToken.decode(token_text)
    except TokenError as exc:
        raise AgentError(str(exc)) from None
    if state.has_enrolment():
        record = state.load_enrolment()
        hint = "run `enclave enrol --resume`" if record.state == "pending" else (
            "use another --state directory to enrol again")
        raise AgentError(f"{state.root} is already enrolled as {record.name}; {hint}")
    state.ensure()
    kek_existed = state.kek_path.exists()
    key = generate_private_key()
    state.keystore().save(key)
    try:
        client = PinnedClient(token.urls, token.pin, timeout)
        _status, reply = client.json(
            "POST",
            PATH_ENROL,
            {
                "key_id": token.key_id,
                "secret": b64url(token.secret),
                "csr": base64.b64encode(build_csr(key)).decode(),
                "hostname": hostname or socket.gethostname(),
            },
        )
        name = _field(reply, "name")
        record = EnrolmentRecord(
            url=token.url,
            urls=token.urls,
            pin=token.pin,
            name=name,
            org=_field(reply, "org"),
            overlay_ip=_field(reply, "overlay_ip"),
            overlay_prefix=_int_field(reply, "overlay_prefix"),
            mac=_field(reply, "mac"),
            state=_field(reply, "state"),
            hostname=hostname or socket.gethostname(),
        )
        if record.state == "active":
            _accept_certificate(state, key, reply, name)
        elif record.state != "pending":
            raise AgentError(f"platform reported unexpected state {record.state!r}")
        state.save_enrolment(record)
    except BaseException:
        # leave no half-enrolled state behind: the key is useless without an enrolment
        for path in (state.key_path, state.cert_path, state.ca_path):
            path.unlink(missing_ok=True)
        if not kek_existed:
            state.kek_path.unlink(missing_ok=True)
        raise
    return _result(record)


def _result(record: EnrolmentRecord) -> EnrolResult:
    return EnrolResult(record.name, record.org, record.overlay_ip, record.overlay_prefix,
                       record.mac, record.state)


def _load_key(state: StateDir) -> Ed25519PrivateKey:
    try:
        return state.keystore().load_ed25519()
    except KeyStoreError as exc:
        raise AgentError(str(exc)) from None


def signed_request(
    state: StateDir,
    record: EnrolmentRecord,
    key: Ed25519PrivateKey,
    action: str,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[int, dict[str, object]]:
    """POST a request signed with the system key (fresh wall-clock timestamp and nonce)."""
    timestamp = int(time.time())
    nonce = b64url(secrets.token_bytes(16))
    signature = sign(key, system_request_message(action, record.name, timestamp, nonce))
    client = PinnedClient(record.all_urls, record.pin, timeout)
    return client.json(
        "POST",
        PATH_SYSTEM_CERT,
        {
            "name": record.name,
            "action": action,
            "timestamp": timestamp,
            "nonce": nonce,
            "signature": base64.b64encode(signature).decode(),
        },
    )


def resume(
    state: StateDir,
    *,
    wait: float = 0.0,
    poll_interval: float = POLL_INTERVAL,
    timeout: float = DEFAULT_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
) -> EnrolResult:
    """Fetch the certificate of a pending (gated) enrolment, polling for up to ``wait`` s."""
    record = state.load_enrolment()
    if record.state == "active":
        return _result(record)
    key = _load_key(state)
    deadline = time.monotonic() + wait
    while True:
        status, reply = signed_request(state, record, key, "fetch", timeout)
        if status == 200:
            _accept_certificate(state, key, reply, record.name)
            record = replace(record, state="active")
            state.save_enrolment(record)
            return _result(record)
        if time.monotonic() + poll_interval > deadline:
            return _result(record)
        sleep(poll_interval)


def renewal_due_at(ident: SystemIdentity) -> datetime.datetime:
    return ident.not_before + (ident.not_after - ident.not_before) * RENEW_AT_FRACTION


def renew(state: StateDir, *, timeout: float = DEFAULT_TIMEOUT) -> SystemIdentity:
    """Get a fresh certificate for the same key now (also picks up tag changes)."""
    record = state.load_enrolment()
    if record.state != "active":
        raise AgentError(f"{record.name} is {record.state}; run `enclave enrol --resume` first")
    key = _load_key(state)
    _status, reply = signed_request(state, record, key, "renew", timeout)
    return _accept_certificate(state, key, reply, record.name)


def renew_if_due(
    state: StateDir, now: datetime.datetime, *, timeout: float = DEFAULT_TIMEOUT
) -> SystemIdentity | None:
    """Renew if ``now`` is past 2/3 of the certificate's lifetime (or it has expired).

    Returns the new identity, or None when renewal is not due yet. For the daemon's timer.
    """
    cert = state.load_certificate()
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    if now < cert.not_valid_before_utc + lifetime * RENEW_AT_FRACTION:
        return None
    return renew(state, timeout=timeout)


__all__ = [
    "EnrolResult",
    "enrol",
    "renew",
    "renew_if_due",
    "renewal_due_at",
    "resume",
]
