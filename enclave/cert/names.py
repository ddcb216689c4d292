"""System names, virtual MACs and tags.

A system name is a short string in Crockford base32 (digits and upper-case letters without
I, L, O, U), e.g. "V88RY". The platform picks it at random and checks it is unused; 5 characters
give 32**5 = 33.5 million names.

The virtual MAC is derived from the name, so every peer computes the same MAC from a certificate:

    mac = BLAKE2b(b"enclave-mac-v1" || name, digest_size=6)
    mac[0] = (mac[0] & 0b1111_1100) | 0b0000_0010   # unicast, locally administered
"""

from __future__ import annotations

import hashlib
import re
import secrets

CROCKFORD_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
SYSTEM_NAME_LENGTH = 5
_NAME_RE = re.compile(r"^[0-9ABCDEFGHJKMNPQRSTVWXYZ]{4,16}$")
_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,62}$")
_ORG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_MAC_DOMAIN = b"enclave-mac-v1"


def random_system_name(length: int = SYSTEM_NAME_LENGTH) -> str:
    """A fresh random system name; the caller must check it is unused."""
    return "".join(secrets.choice(CROCKFORD_ALPHABET) for _ in range(length))


def is_valid_system_name(name: str) -> bool:
    return bool(_NAME_RE.match(name))


def mac_for_name(name: str) -> bytes:
    """The 6-byte locally administered unicast MAC of the system called ``name``."""
    digest = bytearray(hashlib.blake2b(_MAC_DOMAIN + name.encode("ascii"), digest_size=6).digest())
    digest[0] = (digest[0] & 0xFC) | 0x02
    return bytes(digest)


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def parse_mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


def is_valid_tag(tag: str) -> bool:
    """Tags: lower-case letters, digits and ``_ . : -``, 1-63 characters, starting alphanumeric."""
    return bool(_TAG_RE.match(tag))


def normalise_tags(tags: object) -> tuple[str, ...]:
    """Sorted, de-duplicated, validated tags; raises ValueError naming the first bad tag."""
    if isinstance(tags, str):
        items = [t.strip() for t in tags.split(",") if t.strip()]
    elif isinstance(tags, list | tuple | set | frozenset):
        items = list(tags)
    else:
        raise ValueError("tags must be a list of strings")
    out: set[str] = set()
    for tag in items:
        if not isinstance(tag, str) or not is_valid_tag(tag):
            raise ValueError(f"invalid tag {tag!r} (allowed: a-z 0-9 _ . : -, max 63 chars)")
        out.add(tag)
    return tuple(sorted(out))


def is_valid_org(org: str) -> bool:
    """Organisation names: lower-case letters, digits and '-', 1-63 characters."""
    return bool(_ORG_RE.match(org))
