"""`enclave bench platform` on the command line (the bench itself: enclave.bench.platform_load)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from enclave.bench.command import Command, finish, with_progress

STEPS = 5  # platform, enrolled, connected, introduced, failover


def cmd_platform(args: argparse.Namespace) -> int:
    # imported here: keeps `enclave` start-up fast (the bench loads aiohttp, psycopg, the agent)
    from enclave.bench.platform_load import PlatformBenchOptions, run_platform_bench

    opts = PlatformBenchOptions(agents=args.agents, nodes=args.nodes, db=args.db,
                                store=args.store, timeout=args.timeout,
                                failover=not args.no_failover,
                                workdir=Path(args.workdir) if args.workdir else None)
    opts.check()
    report, out = with_progress("enclave bench platform", STEPS,
                                lambda step: run_platform_bench(opts, step))
    return finish(report, out, args)


def register(bsub: argparse._SubParsersAction,  # type: ignore[type-arg,unused-ignore]
             outputs: Callable[[argparse.ArgumentParser], None],
             guard: Callable[[Command], Command]) -> None:
    p = bsub.add_parser(
        "platform", help="the control plane under load on loopback: N simulated agents, K nodes",
        description="N simulated agents (real keys, enrolment, TLS WebSocket control channel, "
        "mutual intents in pairs) against K `enclave platform serve` nodes on loopback "
        "(127.0.0.1, 127.0.0.2, ...) on one store; node 1 is killed at the end and the time "
        "its agents take to reconnect to the others is measured.")
    p.add_argument("--agents", type=int, default=1000, metavar="N",
                   help="simulated agents, an even number (default 1000)")
    p.add_argument("--nodes", type=int, default=2, metavar="K", help="platform nodes (default 2)")
    p.add_argument("--db", metavar="URL", default=None,
                   help="postgresql://... to use (default: a throwaway PostgreSQL cluster when "
                   "K > 1 or --store postgresql, else SQLite)")
    p.add_argument("--store", choices=("sqlite", "postgresql"), default=None,
                   help="the store without --db (default: postgresql when K > 1)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="seconds each stage may take (default 300)")
    p.add_argument("--no-failover", action="store_true", help="do not kill a node at the end")
    p.add_argument("--workdir", metavar="DIR",
                   help="keep the nodes' data and logs here (default: temporary)")
    outputs(p)
    p.set_defaults(func=guard(cmd_platform))
