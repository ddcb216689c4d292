"""Enrolment and certificate fetch/renewal (formats: enclave.cert.enrolment).

    agent                                            platform
    POST /v1/enrol {key_id, secret, csr, hostname} -> token check, CSR check, one transaction:
                                                      name + IP + system row (+ cert) + key use
      <- 201 {name, overlay_ip, certificate, ca}     (approval auto)
      <- 202 {name, overlay_ip, state: pending}      (approval gated)
    POST /v1/system/certificate {signed request}   -> signature by the system key, fresh
                                                      timestamp, unused nonce
      <- 200 {certificate, ca} | 202 pending | 403 disabled/revoked
"""

from __future__ import annotations

import base64
import binascii
import logging

from aiohttp import web

from enclave.cert.ca import parse_csr
from enclave.cert.enrolment import (
    PATH_ENROL,
    PATH_SYSTEM_CERT,
    SYSTEM_REQUEST_ACTIONS,
    SYSTEM_REQUEST_MAX_SKEW,
    system_request_message,
    unb64url,
)
from enclave.cert.errors import CertificateError
from enclave.cert.keys import public_key_raw, verify
from enclave.cert.names import is_valid_system_name
from enclave.platform.app import PLATFORM, Platform, read_json
from enclave.platform.authority import refused_if_too_large
from enclave.platform.errors import ApiError
from enclave.platform.store import IssuedCert, System

log = logging.getLogger("enclave.platform.enrol")
MAX_HOSTNAME = 253


def _str(body: dict[str, object], field: str, max_len: int = 4096) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise ApiError(400, f"missing or invalid field {field!r}")
    return value


def _pem(der: bytes) -> str:
    return (
        b"-----BEGIN CERTIFICATE-----\n"
        + base64.encodebytes(der)
        + b"-----END CERTIFICATE-----\n"
    ).decode()


def _reply(platform: Platform, system: System, cert: IssuedCert | None) -> dict[str, object]:
    return {
        "name": system.name,
        "org": platform.settings.org,
        "overlay_ip": str(system.overlay_ip),
        "overlay_prefix": platform.settings.overlay.prefixlen,
        "mac": system.mac,
        "tags": list(system.tags),
        "state": system.state,
        "certificate": None if cert is None else _pem(cert.der),
        "ca": platform.authority.ca_pem.decode(),
    }


async def enrol(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    body = await read_json(request)
    key_id = _str(body, "key_id", 64)
    try:
        secret = unb64url(_str(body, "secret", 128))
        csr = base64.b64decode(_str(body, "csr", 8192), validate=True)
    except (ValueError, binascii.Error):
        raise ApiError(400, "secret or csr is not valid base64") from None
    hostname = _str(body, "hostname", MAX_HOSTNAME)
    if not hostname.isprintable():
        raise ApiError(400, "hostname contains control characters")
    try:
        public_key = public_key_raw(parse_csr(csr))
    except CertificateError as exc:
        raise ApiError(400, f"bad CSR: {exc}") from None
    now = platform.clock()
    with refused_if_too_large(409):  # the key's tags: nothing was written
        system, cert = await platform.store.enrol(
            key_id=key_id,
            secret=secret,
            public_key=public_key,
            hostname=hostname,
            overlay=platform.settings.overlay,
            now=int(now.timestamp()),
            issue=platform.authority.issuer(now),
        )
    log.info(
        "enrolled system %s (hostname %r, key %s, %s, %s)",
        system.name, hostname, key_id, system.overlay_ip, system.state,
    )
    return web.json_response(_reply(platform, system, cert), status=201 if cert else 202)


async def _authenticate(platform: Platform, body: dict[str, object]) -> tuple[System, str]:
    name = _str(body, "name", 16)
    action = _str(body, "action", 16)
    nonce = _str(body, "nonce", 64)
    timestamp = body.get("timestamp")
    if action not in SYSTEM_REQUEST_ACTIONS:
        raise ApiError(400, f"unknown action {action!r}")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise ApiError(400, "missing or invalid field 'timestamp'")
    try:
        signature = base64.b64decode(_str(body, "signature", 128), validate=True)
        if len(unb64url(nonce)) < 16:
            raise ValueError("nonce too short")
    except (ValueError, binascii.Error):
        raise ApiError(400, "signature or nonce is malformed") from None
    now = int(platform.clock().timestamp())
    if abs(now - timestamp) > SYSTEM_REQUEST_MAX_SKEW:
        raise ApiError(401, "request timestamp too far from platform time (check the clock)")
    try:
        system = await platform.store.get_system(name) if is_valid_system_name(name) else None
    except ApiError:
        system = None
    message = system_request_message(action, name, timestamp, nonce)
    if system is None or not verify(system.public_key, signature, message):
        raise ApiError(401, "authentication failed (unknown system or bad signature)")
    if not await platform.store.use_nonce(nonce, now):
        raise ApiError(401, "replayed request")
    return system, action


async def system_certificate(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    system, action = await _authenticate(platform, await read_json(request))
    now = platform.clock()
    ts = int(now.timestamp())
    if system.state == "pending":
        platform.store.note_seen(system.name, ts)
        return web.json_response(_reply(platform, system, None), status=202)
    if system.state != "active":
        raise ApiError(403, f"system {system.name} is {system.state}")
    cert = await platform.store.current_certificate(system.name, ts) if action == "fetch" \
        else None
    if cert is None:
        with refused_if_too_large(409):
            cert = await platform.store.issue_certificate(system.name, ts,
                                                    platform.authority.issuer(now))
        log.info("issued certificate %d to %s (%s)", cert.serial, system.name, action)
    else:
        platform.store.note_seen(system.name, ts)
    return web.json_response(_reply(platform, await platform.store.get_system(system.name), cert))


def setup(app: web.Application) -> None:
    app.router.add_post(PATH_ENROL, enrol)
    app.router.add_post(PATH_SYSTEM_CERT, system_certificate)


