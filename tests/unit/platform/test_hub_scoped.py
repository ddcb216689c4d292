"""The control hub's scoped passes decide exactly as its full passes (the oracle).

Two hubs run on one real store (SQLite and PostgreSQL) and one real CA: ``scoped`` takes every
change as production does (Hub.step: a scoped pass for the systems a change names), ``oracle``
re-reads the whole store on every step (a full pass). A seeded random sequence of connects,
disconnects, intents stated and removed, disables, enables and revocations drives both; after
every step both hubs hold the same introduced pairs and every system's session received the
same introductions, withdrawals (with their reasons), intent lists, CRL pushes and closures.
At the end a full pass of the scoped hub changes nothing (its state is the full evaluation's).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from enclave.cert.keys import generate_private_key, public_key_raw
from enclave.platform.app import Platform
from enclave.platform.authority import Authority
from enclave.platform.hub import Hub, Session
from enclave.platform.init import init_platform
from enclave.platform.paths import PlatformPaths, PlatformSettings
from enclave.platform.store import Store

SYSTEMS = 6
STEPS = 150
OPS = ("connect",) * 5 + ("disconnect",) * 3 + ("intent",) * 5 + ("unintent",) * 2 + (
    "disable", "enable", "enable", "enable", "revoke")


def _init(tmp: Path, location: str | Path) -> PlatformPaths:
    """`platform init` (it runs its own event loop)."""
    paths = PlatformPaths(tmp / "data", database=location if isinstance(location, str) else None)
    init_platform(paths, url="https://127.0.0.1:8443", org="lab",
                  overlay=ipaddress.IPv4Network("100.64.0.0/10"),
                  now=datetime.datetime.now(datetime.UTC))
    return paths


async def _platform(paths: PlatformPaths) -> Platform:
    store = await Store.open(paths.database or paths.db)
    settings = await PlatformSettings.load(store)
    authority = Authority.load(paths, settings.org, settings.overlay.prefixlen)
    return Platform(paths, store, settings, authority)


def _drain(session: Session) -> list[tuple[Any, ...]]:
    """What the session was sent since the last drain, as comparable tuples (no punch times,
    tickets or certificates: those differ between two hubs by design)."""
    out: list[tuple[Any, ...]] = []
    while not session.queue.empty():
        msg = session.queue.get_nowait()
        if msg is None:
            out.append(("closed",))
        elif msg["type"] == "introduce":
            out.append(("introduce", msg["peer"]))
        elif msg["type"] == "withdraw":
            out.append(("withdraw", msg["peer"], msg["reason"]))
        elif msg["type"] == "intents":
            out.append(("intents", tuple(msg["peers"])))
        elif msg["type"] == "crl":
            out.append(("crl", msg["crl_number"]))
        else:
            out.append((msg["type"],))
    return out


class Twin:
    """One hub and the sessions its systems hold on it."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.sent: dict[str, Counter[tuple[Any, ...]]] = {}
        self.live: dict[str, Session] = {}

    def connect(self, name: str, serial: int, key: bytes) -> None:
        session = Session(name, serial, public_key=key)
        self.live[name] = session
        self.hub.join(session)

    def disconnect(self, name: str) -> None:
        session = self.live.pop(name, None)
        if session is not None:
            self.hub.leave(session)

    def collect(self) -> dict[str, Counter[tuple[Any, ...]]]:
        got: dict[str, Counter[tuple[Any, ...]]] = {}
        for name, session in list(self.live.items()):
            got[name] = Counter(_drain(session))
            if session.closed:
                del self.live[name]
        return {n: c for n, c in got.items() if c}


async def _run(paths: PlatformPaths, seed: int) -> None:
    platform = await _platform(paths)
    store = platform.store
    try:
        now = int(platform.clock().timestamp())
        key = await store.create_key(secret=b"k" * 32, now=now, expires_at=None,
                                     uses_allowed=None, tags=(), approval="auto",
                                     ephemeral=False, cert_lifetime=86400)
        keys: dict[str, bytes] = {}
        for i in range(SYSTEMS):
            public = public_key_raw(generate_private_key())
            system, _cert = await store.enrol(
                key_id=key.id, secret=b"k" * 32, public_key=public, hostname=f"h{i}",
                overlay=platform.settings.overlay, now=now,
                issue=platform.authority.issuer(platform.clock()))
            keys[system.name] = public
        names = sorted(keys)
        scoped, oracle = Twin(Hub(platform)), Twin(Hub(platform))
        for twin in (scoped, oracle):
            await twin.hub.step(full=True)  # the first pass of a started hub
        rng = random.Random(seed)
        intents: set[tuple[str, str]] = set()
        seen: Counter[tuple[Any, ...]] = Counter()  # what the run exercised
        revoked = 0  # at most two systems are revoked for good
        for step in range(STEPS):
            op = rng.choice(OPS)
            a, b = rng.sample(names, 2)
            system = await store.get_system(a)
            now = int(platform.clock().timestamp())
            touched: tuple[str, ...] = (a,)
            if op == "connect":
                cert = await store.current_certificate(a, now)
                if system.state != "active" or cert is None or a in scoped.live:
                    continue
                for twin in (scoped, oracle):
                    twin.connect(a, cert.serial, keys[a])
                touched = ()  # join() names it
            elif op == "disconnect":
                for twin in (scoped, oracle):
                    twin.disconnect(a)
                touched = ()  # leave() names it
            elif op == "intent":
                if intents and rng.random() < 0.6:  # often the answer to a one-sided intent
                    b, a = rng.choice(sorted(intents))
                await store.put_intent(a, b, b"statement", b"signature", now, None, None)
                intents.add((a, b))
                touched = (a, b)
            elif op == "unintent":
                if not intents:
                    continue
                a, b = rng.choice(sorted(intents))
                intents.discard((a, b))
                await store.delete_intent(a, b)
                touched = (a, b)
            elif op == "disable" and system.state == "active":
                await store.disable(a, now)
            elif op == "enable" and system.state == "disabled":
                await store.enable(a)
            elif op == "revoke" and system.state != "revoked" and revoked < 2:
                revoked += 1
                await store.revoke(a, now)
            elif op in ("disable", "enable", "revoke"):
                continue
            if touched:
                scoped.hub.changed(touched)
                oracle.hub.changed()
            # a pass may close sessions (leave() names them): run until nothing is left
            while scoped.hub.has_work() or oracle.hub.has_work():
                await scoped.hub.step(full=False)
                await oracle.hub.step(full=True)
            where = f"seed {seed}, step {step}: {op} {a} {b}"
            assert scoped.hub.introduced.pairs == oracle.hub.introduced.pairs, where
            got = scoped.collect()
            assert got == oracle.collect(), where
            for counts in got.values():
                seen.update(m[0:1] + m[2:3] for m in counts)
        assert seen[("introduce",)] and seen[("withdraw", "offline")], seen
        await scoped.hub.step(full=True)
        assert scoped.collect() == {}  # the full evaluation finds nothing to change
    finally:
        await store.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scoped_passes_agree_with_full_passes(tmp_path: Path, store_location: str | Path,
                                              seed: int) -> None:
    asyncio.run(_run(_init(tmp_path, store_location), seed))
