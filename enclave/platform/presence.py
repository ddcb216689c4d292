"""Presence: which node of a shared platform each online system is connected to.

    node 1 hub --join/leave/report--> presence table (name, node, report, seen_at)
                                      + NOTIFY enclave_platform 'presence:<node>:<names>'
    node 2 hub <--LISTEN (fanout.py)-- wakes, reads the table, introduces its own sessions to
                                       node 1's systems (and node 1 does the same the other way)

Each node writes only the rows of its own sessions: at once when a session joins, leaves or
its report takes effect, and every HEARTBEAT seconds for all of them (``seen_at``). A row whose
heartbeat is older than PRESENCE_TTL is ignored (its node died without cleaning up; the agents
reconnect elsewhere and their new node overwrites the row). Presence is used only on a shared
(PostgreSQL) store; one node on SQLite keeps it all in memory as before.

The report is JSON: {"c": candidates (introduction format), "n": nat, "l": local (on the
platform's host), "r": the node's relay as {"transport", "host", "port"} or null}.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from enclave.discovery.candidates import Candidate, NatBehaviour, PathAddr
from enclave.discovery.introduction import (
    MAX_INTRO_CANDIDATES,
    IntroductionError,
    addr_from_json,
    addr_to_json,
    candidate_to_json,
    candidates_from_json,
)
from enclave.platform.store import Store

log = logging.getLogger("enclave.platform.presence")
HEARTBEAT = 5.0  # seconds between two heartbeats of a node's presence rows
PRESENCE_TTL = 20  # seconds: a row not refreshed for this long is stale (its node is gone)
MAX_REPORT_CHARS = 16384
_CHUNK = 500  # names per IN (...) of a partial read


@dataclass(frozen=True)
class Presence:
    """A system online on a node (another one, when read by a hub)."""

    name: str
    node: str
    candidates: tuple[Candidate, ...] = ()
    nat: NatBehaviour = NatBehaviour.UNKNOWN
    local: bool = False
    relay: PathAddr | None = None

    def report_json(self) -> str:
        body: dict[str, Any] = {
            "c": [candidate_to_json(c) for c in self.candidates], "n": self.nat.value,
            "l": self.local, "r": None if self.relay is None else addr_to_json(self.relay)}
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_row(cls, name: str, node: str, report: str) -> Presence | None:
        """The row as a Presence; None (logged) when its report is unreadable."""
        try:
            if len(report) > MAX_REPORT_CHARS:
                raise ValueError("report too long")
            body = json.loads(report)
            if not isinstance(body, dict):
                raise ValueError("report is not an object")
            candidates, _dropped = candidates_from_json(
                body.get("c", []), limit=MAX_INTRO_CANDIDATES, loopback=True)
            relay = body.get("r")
            return cls(name, node, candidates, NatBehaviour(body.get("n", "unknown")),
                       body.get("l") is True, None if relay is None else addr_from_json(relay))
        except (ValueError, TypeError, KeyError, IntroductionError, RecursionError) as exc:
            log.warning("presence of %s on node %s is unreadable: %s", name[:64], node[:64],
                        str(exc)[:200])
            return None


async def publish(store: Store, rows: list[Presence], gone: list[str], node: str,
                  now: int) -> None:
    """Upsert this node's rows for ``rows``; delete its rows for ``gone`` (only if still its)."""
    async with store.db.write(serialized=False) as tx:
        if rows:
            await tx.executemany(
                "INSERT INTO presence (name, node, report, seen_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET node = excluded.node, "
                "report = excluded.report, seen_at = excluded.seen_at",
                [(p.name, node, p.report_json(), now) for p in rows])
        if gone:
            await tx.executemany("DELETE FROM presence WHERE name = ? AND node = ?",
                                 [(name, node) for name in gone])


async def heartbeat(store: Store, node: str, now: int) -> None:
    """Refresh every row of this node."""
    async with store.db.write(serialized=False) as tx:
        await tx.execute("UPDATE presence SET seen_at = ? WHERE node = ?", (now, node))


async def withdraw_node(store: Store, node: str) -> None:
    """Delete every row of this node (it stops)."""
    async with store.db.write(serialized=False) as tx:
        await tx.execute("DELETE FROM presence WHERE node = ?", (node,))


class PresenceReader:
    """Reads the other nodes' rows; a row whose node and report are unchanged since the last
    read is not parsed again (a hub reads every row on each full pass)."""

    def __init__(self, store: Store, node: str) -> None:
        self.store = store
        self.node = node
        self._parsed: dict[str, tuple[str, str, Presence | None]] = {}  # name -> node, report

    def _parse(self, name: str, node: str, report: str) -> Presence | None:
        known = self._parsed.get(name)
        if known is not None and known[0] == node and known[1] == report:
            return known[2]
        p = Presence.from_row(name, node, report)
        self._parsed[name] = (node, report, p)
        return p

    async def others(self, now: int) -> dict[str, Presence]:
        """The fresh rows of every other node, by system name."""
        async with self.store.db.read() as tx:
            rows = await tx.fetchall(
                "SELECT name, node, report FROM presence WHERE node <> ? AND seen_at >= ?",
                (self.node, now - PRESENCE_TTL))
        out = {}
        for row in rows:
            p = self._parse(str(row["name"]), str(row["node"]), str(row["report"]))
            if p is not None:
                out[p.name] = p
        self._parsed = {n: v for n, v in self._parsed.items() if n in out}
        return out

    async def some(self, now: int, names: set[str] | frozenset[str]) -> dict[str, Presence]:
        """The fresh rows of other nodes for ``names`` only."""
        wanted = sorted(names)
        out = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start:start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            async with self.store.db.read() as tx:
                rows = await tx.fetchall(
                    "SELECT name, node, report FROM presence WHERE node <> ? AND seen_at >= ? "
                    f"AND name IN ({marks})", [self.node, now - PRESENCE_TTL, *chunk])
            for row in rows:
                p = self._parse(str(row["name"]), str(row["node"]), str(row["report"]))
                if p is not None:
                    out[p.name] = p
        return out


async def others(store: Store, node: str, now: int) -> dict[str, Presence]:
    """The fresh rows of every other node, by system name."""
    return await PresenceReader(store, node).others(now)
