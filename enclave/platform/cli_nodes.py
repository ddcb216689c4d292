"""`enclave platform nodes [--json]`: the platform's nodes, from the store's nodes table.

Every `enclave platform serve` process keeps its row there (enclave.platform.nodes): the listen
address and URL it serves, host, pid, enclave version, when it started, its last heartbeat and
the agents connected to it then. A node whose heartbeat is older than the presence TTL is
"stale" (it died without a word; its agents have moved to other nodes). The same list is
GET /v1/admin/nodes on the admin API.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from collections.abc import Callable, Sequence

from enclave.platform.cli_store import Command, with_store
from enclave.platform.nodes import Node, list_nodes, nodes_json
from enclave.platform.presence import PRESENCE_TTL

HEADER = ("ID", "LISTEN", "URL", "HOST", "PID", "VERSION", "STARTED", "LAST SEEN", "AGENTS",
          "STATE")


def _ts(value: int) -> str:
    return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def render(nodes: Sequence[Node], now: int, ttl: int = PRESENCE_TTL) -> str:
    """The nodes as an aligned table, one line each under a header."""
    rows = [HEADER] + [
        (n.id, n.listen or "-", n.url or "-", n.host, str(n.pid), n.version, _ts(n.started_at),
         f"{max(0, now - n.seen_at)}s ago", str(n.agents), n.state(now, ttl)) for n in nodes]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds >= 1, got {text!r}")
    return value


def register(psub: argparse._SubParsersAction,  # type: ignore[type-arg,unused-ignore]
             data_arg: Callable[[argparse.ArgumentParser], None],
             guard: Callable[[Command], Command]) -> None:
    def cmd_nodes(args: argparse.Namespace) -> int:
        nodes = with_store(args, lambda store, _paths: list_nodes(store))
        now = int(time.time())
        if args.json:
            print(json.dumps(nodes_json(nodes, now, args.stale_after)))
        else:
            print(render(nodes, now, args.stale_after))
        return 0

    p = psub.add_parser("nodes", help="the platform's running nodes (serve processes) and the "
                        "agents connected to each")
    data_arg(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--stale-after", metavar="SECONDS", type=_seconds, default=PRESENCE_TTL,
                   help="show a node as stale when its last heartbeat is older than this "
                   f"(default {PRESENCE_TTL}: when the other nodes stop trusting its agents' "
                   "presence)")
    p.set_defaults(func=guard(cmd_nodes))
