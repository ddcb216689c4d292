"""Admin operations shared by the CLI (direct store access) and the admin HTTP API."""

from __future__ import annotations

import re

from enclave.cert.enrolment import EnrolmentToken, new_secret
from enclave.cert.names import normalise_tags
from enclave.platform.errors import ApiError
from enclave.platform.paths import PlatformSettings
from enclave.platform.store import EnrolmentKey, Store

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DEFAULT_CERT_LIFETIME = 30 * 86400
MIN_CERT_LIFETIME = 60
MAX_CERT_LIFETIME = 365 * 86400


def parse_duration(text: str) -> int:
    """'90s', '15m', '24h', '30d', '2w' or plain seconds -> seconds (positive)."""
    match = _DURATION.match(str(text))
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"invalid duration {text!r} (use e.g. 90s, 15m, 24h, 30d)")
    return int(match.group(1)) * _UNITS[match.group(2)]


async def create_enrolment_key(
    store: Store,
    settings: PlatformSettings,
    *,
    now: int,
    uses: int | None,
    expires_in: int | None,
    tags: object,
    approval: str,
    ephemeral: bool,
    cert_lifetime: int,
) -> tuple[EnrolmentKey, str]:
    """Create a key; returns it and the token string (the only time the secret is visible)."""
    if uses is not None and uses < 1:
        raise ApiError(400, "--uses must be at least 1")
    if approval not in ("auto", "gated"):
        raise ApiError(400, "approval must be 'auto' or 'gated'")
    if not MIN_CERT_LIFETIME <= cert_lifetime <= MAX_CERT_LIFETIME:
        raise ApiError(400, "certificate lifetime must be between 60 s and 365 days")
    try:
        clean_tags = normalise_tags(tags)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    secret = new_secret()
    key = await store.create_key(
        secret=secret,
        now=now,
        expires_at=None if expires_in is None else now + expires_in,
        uses_allowed=uses,
        tags=clean_tags,
        approval=approval,
        ephemeral=ephemeral,
        cert_lifetime=cert_lifetime,
    )
    token = EnrolmentToken(settings.url, settings.pin, key.id, secret, settings.urls).encode()
    return key, token


def parse_tag_changes(changes: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """['+a', '-b', 'c'] -> (add=('a', 'c'), remove=('b',)); validates each tag."""
    add: list[str] = []
    remove: list[str] = []
    for change in changes:
        target = remove if change.startswith("-") else add
        target.append(change.lstrip("+-"))
    try:
        return normalise_tags(add), normalise_tags(remove)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
