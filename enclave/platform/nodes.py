"""The nodes table: which `enclave platform serve` processes run this platform, and how many
agents each holds (`enclave platform nodes`, GET /v1/admin/nodes).

    node (hub) --start: start_node--> nodes (id, listen, url, host, pid, version,
               --every HEARTBEAT: beat->        started_at, seen_at, agents)
               --clean stop: remove-->
    admin CLI / API   --list_nodes, state(now)-->   alive | stale

One row per running node, written only by that node: inserted when its hub starts (its URL:
the platform URL that names its --listen address and port, node_url), refreshed
every presence.HEARTBEAT seconds (``seen_at`` and ``agents``: one small UPDATE; a row that
vanished is inserted again), deleted when it stops cleanly. A row not refreshed for
presence.PRESENCE_TTL seconds is shown as stale (its node died without a word); any live node's
heartbeat deletes rows stale for longer than PRUNE_AFTER, so the table stays bounded. The one
node of a SQLite platform writes its row the same way. Every call is one short transaction on
store.db (off the event loop, like every store call). Times are UNIX seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from enclave import __version__
from enclave.discovery.dualstack import hostport
from enclave.platform.presence import PRESENCE_TTL
from enclave.platform.store import Store
from enclave.platform.store.records import Row

PRUNE_AFTER = 86400  # seconds a stale row is kept (its node died) before a live node drops it
RESOLVE_TIMEOUT = 2.0  # seconds to resolve the URLs' host names at start (node_url)
MAX_TEXT = 255  # characters kept of the host name, listen address and URL
_COLUMNS = "id, listen, url, host, pid, version, started_at, seen_at, agents"


@dataclass(frozen=True)
class Node:
    """One node's row."""

    id: str
    listen: str  # HOST:PORT of its API (--listen)
    url: str | None  # the platform URL it serves, when known (node_url)
    host: str
    pid: int
    version: str
    started_at: int
    seen_at: int
    agents: int = 0

    def state(self, now: int, ttl: int = PRESENCE_TTL) -> str:
        """"alive", or "stale": not refreshed for longer than ``ttl`` seconds."""
        return "alive" if now - self.seen_at <= ttl else "stale"

    def as_json(self, now: int, ttl: int = PRESENCE_TTL) -> dict[str, object]:
        return {"id": self.id, "listen": self.listen, "url": self.url, "host": self.host,
                "pid": self.pid, "version": self.version, "started_at": self.started_at,
                "seen_at": self.seen_at, "seen_ago": max(0, now - self.seen_at),
                "agents": self.agents, "state": self.state(now, ttl)}

    @classmethod
    def from_row(cls, row: Row) -> Node:
        return cls(str(row["id"]), str(row["listen"]),
                   None if row["url"] is None else str(row["url"]), str(row["host"]),
                   int(row["pid"]), str(row["version"]), int(row["started_at"]),
                   int(row["seen_at"]), int(row["agents"]))


def node_url(urls: Sequence[str], listen: tuple[str, int] | None,
             addresses: Mapping[str, Collection[str]] | None = None) -> str | None:
    """The platform URL this node serves: the one whose port is its --listen port and whose
    host is its --listen host (or resolves to it: ``addresses``, host name -> addresses), else
    the platform's only URL (e.g. a node listening on a wildcard address of a one-URL platform);
    None when that is not known."""
    if listen is not None:
        host, port = listen
        for url in urls:
            try:
                parts = urlsplit(url)
                if parts.port == port and parts.hostname is not None and (
                        parts.hostname == host
                        or host in (addresses or {}).get(parts.hostname, ())):
                    return url
            except ValueError:
                continue
    return urls[0] if len(urls) == 1 else None


async def resolve_hosts(urls: Sequence[str], timeout: float = RESOLVE_TIMEOUT
                        ) -> dict[str, set[str]]:
    """The addresses of the URLs' host names (on the loop's resolver; what is not resolved
    within ``timeout`` seconds in all is left out)."""
    loop = asyncio.get_running_loop()
    out: dict[str, set[str]] = {}

    async def one(name: str) -> None:
        with contextlib.suppress(OSError, UnicodeError):
            infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            out[name] = {str(info[4][0]) for info in infos}

    names = set()
    for url in urls:
        with contextlib.suppress(ValueError):
            name = urlsplit(url).hostname
            if name:
                names.add(name)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(one(n) for n in sorted(names))), timeout)
    return out


def this_node(node_id: str, listen: tuple[str, int] | None, url: str | None, now: int) -> Node:
    """The row of this process (host name, pid and enclave version filled in)."""
    return Node(node_id, "" if listen is None else hostport(*listen)[:MAX_TEXT],
                None if url is None else url[:MAX_TEXT], socket.gethostname()[:MAX_TEXT],
                os.getpid(), __version__, now, now)


async def start_node(store: Store, node_id: str, listen: tuple[str, int] | None,
                     urls: Sequence[str], now: int) -> Node:
    """This process's row (its URL found among ``urls``: node_url, the host names resolved
    when that is needed), inserted into the nodes table."""
    url = node_url(urls, listen)
    if url is None and listen is not None:
        url = node_url(urls, listen, await resolve_hosts(urls))
    node = this_node(node_id, listen, url, now)
    await register(store, node)
    return node


async def register(store: Store, node: Node) -> None:
    """Insert (or replace) the node's row."""
    async with store.db.write(serialized=False) as tx:
        await tx.execute(
            f"INSERT INTO nodes ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET listen = excluded.listen, url = excluded.url, "
            "host = excluded.host, pid = excluded.pid, version = excluded.version, "
            "started_at = excluded.started_at, seen_at = excluded.seen_at, "
            "agents = excluded.agents",
            (node.id, node.listen, node.url, node.host, node.pid, node.version,
             node.started_at, node.seen_at, node.agents))


async def beat(store: Store, node: Node, now: int, agents: int) -> None:
    """The node's heartbeat: its ``seen_at`` and ``agents`` refreshed (its row inserted again
    if it is gone: pruned while the node was cut off from the database), and every row stale
    for longer than PRUNE_AFTER deleted."""
    async with store.db.write(serialized=False) as tx:
        changed = await tx.execute("UPDATE nodes SET seen_at = ?, agents = ? WHERE id = ?",
                                   (now, agents, node.id))
        await tx.execute("DELETE FROM nodes WHERE seen_at < ?",
                         (now - PRESENCE_TTL - PRUNE_AFTER,))
    if not changed:
        await register(store, Node(node.id, node.listen, node.url, node.host, node.pid,
                                   node.version, node.started_at, now, agents))


async def remove(store: Store, node_id: str) -> None:
    """Delete the node's row (it stops cleanly)."""
    async with store.db.write(serialized=False) as tx:
        await tx.execute("DELETE FROM nodes WHERE id = ?", (node_id,))


async def list_nodes(store: Store) -> list[Node]:
    """Every row, the oldest node first."""
    async with store.db.read() as tx:
        rows = await tx.fetchall(f"SELECT {_COLUMNS} FROM nodes ORDER BY started_at, id")
    return [Node.from_row(row) for row in rows]


def nodes_json(nodes: Sequence[Node], now: int, ttl: int = PRESENCE_TTL) -> dict[str, object]:
    """The list as the CLI's --json and GET /v1/admin/nodes give it."""
    return {"now": now, "stale_after": ttl, "nodes": [n.as_json(now, ttl) for n in nodes]}
