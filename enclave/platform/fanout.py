"""Fan-out between the nodes of a shared platform: PostgreSQL LISTEN/NOTIFY.

A node that changes something another node must act on (a session joined, left or reported —
presence; an intent, admin change or enrolment landed — change) sends one small notification
on CHANNEL. Every node LISTENs on a connection of its own and wakes its hub, which re-reads the
store and delivers what concerns its own connected agents (introductions, withdrawals, CRL and
renewal pushes, relay tickets). The payload names the event, never its content:

    KIND ":" NODE ":" NAME ("," NAME)*       e.g.  presence:node-3f2a:web-1,db-2

KIND is "presence" or "change"; NODE the sender's node id; the names are the systems concerned
(none: every system). Payloads stay below PostgreSQL's 8000-byte limit: when the names do not
fit, none are sent. A node ignores its own notifications. Losing the LISTEN connection only
slows things down (the hub also polls Store.data_version every TICK): it is reopened after
RECONNECT seconds, and the hub woken in case something was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg

from enclave.platform.store import Store
from enclave.platform.store.postgres import redacted

log = logging.getLogger("enclave.platform.fanout")
CHANNEL = "enclave_platform"
KINDS = ("presence", "change")
MAX_PAYLOAD = 7900  # bytes (PostgreSQL refuses 8000 and more)
RECONNECT = 2.0  # seconds before a lost LISTEN connection is reopened


@dataclass(frozen=True)
class Event:
    kind: str
    node: str
    names: tuple[str, ...] = ()  # empty: every system


def encode_event(event: Event) -> str:
    """The NOTIFY payload; the names are dropped when they would not fit."""
    head = f"{event.kind}:{event.node}:"
    body = ",".join(event.names)
    if len((head + body).encode()) > MAX_PAYLOAD:
        body = ""
    return head + body


def decode_event(payload: str) -> Event | None:
    """The event of a payload; None when it is not one of ours."""
    if len(payload) > MAX_PAYLOAD:
        return None
    parts = payload.split(":", 2)
    if len(parts) != 3 or parts[0] not in KINDS or not parts[1]:
        return None
    names = tuple(n for n in parts[2].split(",") if n) if parts[2] else ()
    return Event(parts[0], parts[1], names)


async def notify(store: Store, event: Event) -> None:
    """Send ``event`` to every node listening on the store's database (PostgreSQL only)."""
    if store.db.dialect != "postgresql":
        return
    async with store.db.write(serialized=False) as tx:
        await tx.execute("SELECT pg_notify(?, ?)", (CHANNEL, encode_event(event)))


class Listener:
    """LISTEN on CHANNEL on a connection of its own; ``on_event(event)`` for every other node's
    notification, ``on_event(None)`` after the connection was lost and reopened."""

    def __init__(self, url: str, node: str, on_event: Callable[[Event | None], None]) -> None:
        self.url = url
        self.node = node
        self.on_event = on_event
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        first = True
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    if not first:
                        self.on_event(None)  # something may have been missed meanwhile
                    first = False
                    async for note in conn.notifies():
                        self._deliver([note.payload])
            except psycopg.Error as exc:
                log.warning("fan-out: LISTEN on %s lost: %s", redacted(self.url),
                            str(exc).strip().splitlines()[0][:200] if str(exc).strip() else
                            type(exc).__name__)
            self.connected.clear()
            await asyncio.sleep(RECONNECT)

    def _deliver(self, payloads: Iterable[str]) -> None:
        for payload in payloads:
            event = decode_event(payload)
            if event is None or event.node == self.node:
                continue
            try:
                self.on_event(event)
            except Exception:
                log.exception("fan-out: handling %s failed", event.kind)
