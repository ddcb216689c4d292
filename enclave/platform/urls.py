"""The platform's URLs: one per node, all carried in every enrolment token and told to agents.

Kept in the store's meta table: ``url`` (the first, as before) and ``urls`` (a JSON list of
all). `enclave platform init --url URL` (repeatable) writes them; `enclave platform urls
add|remove|list` changes them; every node sends the list in its control channel's welcome
(``"urls"``) and, when it changes, to every connected agent ({"type": "urls"}).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import urlsplit

from enclave.platform.errors import InitError
from enclave.platform.store import Store

MAX_URLS = 16
MAX_URL_CHARS = 256


def check_url(url: str) -> str:
    """``url`` if it looks like https://HOST:PORT, else InitError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        port = None
        parts = urlsplit("")
    if (len(url) > MAX_URL_CHARS or parts.scheme != "https" or not parts.hostname
            or port is None or parts.path not in ("", "/")):
        raise InitError(f"--url must look like https://HOST:PORT, got {url[:MAX_URL_CHARS]!r}")
    return url.rstrip("/")


def check_urls(urls: Sequence[str]) -> list[str]:
    """The URLs checked, in order, duplicates dropped; InitError when none or too many."""
    out: list[str] = []
    for url in urls:
        checked = check_url(url)
        if checked not in out:
            out.append(checked)
    if not out:
        raise InitError("at least one --url is needed")
    if len(out) > MAX_URLS:
        raise InitError(f"at most {MAX_URLS} platform URLs")
    return out


def encode_urls(urls: Sequence[str]) -> str:
    return json.dumps(list(urls), separators=(",", ":"))


def decode_urls(text: str | None, first: str) -> list[str]:
    """The stored list (``first`` alone when none is stored or it is unreadable)."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        value = None
    if not isinstance(value, list) or not value or not all(isinstance(u, str) for u in value):
        return [first]
    return [str(u) for u in value[:MAX_URLS]]


async def load_urls(store: Store) -> list[str]:
    first = await store.require_meta("url")
    return decode_urls(await store.get_meta("urls"), first)


async def save_urls(store: Store, urls: Sequence[str]) -> list[str]:
    checked = check_urls(urls)
    await store.set_meta({"url": checked[0], "urls": encode_urls(checked)})
    return checked
