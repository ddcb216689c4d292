"""Diagnostics commands: `enclave ping NAME`, `enclave netcheck`.

`ping` asks the running agent (local API, agent/localapi.py) to send one authenticated PING per
round through its session with NAME and prints the path, endpoint and round-trip time of each
PONG (agent/ping.py); exit status 0 when at least one PONG came back, 1 otherwise.
`netcheck` measures this system's NAT behaviour against the platform's reflector with the
system's own key (agent/netcheck.py); it needs no running agent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from enclave.agent.errors import AgentError
from enclave.agent.localapi import CLIENT_TIMEOUT, call
from enclave.agent.ping import DEFAULT_TIMEOUT, MAX_TIMEOUT, format_pong
from enclave.agent.state import STATE_ENV, StateDir, resolve_state_dir
from enclave.cert.errors import CertificateError, KeyStoreError

Command = Callable[[argparse.Namespace], int]
PING_INTERVAL = 1.0  # seconds from one PING to the next (like ping(8))
MAX_COUNT = 10000


def _guard(func: Command) -> Command:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (AgentError, KeyStoreError, CertificateError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def _state(args: argparse.Namespace) -> StateDir:
    return StateDir(resolve_state_dir(args.state))


def cmd_ping(args: argparse.Namespace) -> int:
    if not 1 <= args.count <= MAX_COUNT:
        raise AgentError(f"-c must be 1..{MAX_COUNT}")
    if not 0 < args.timeout <= MAX_TIMEOUT:
        raise AgentError(f"--timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
    root = _state(args).root
    answered = 0
    for i in range(args.count):
        started = time.monotonic()
        result = call(root, "ping", timeout=args.timeout + CLIENT_TIMEOUT,
                      args={"peer": args.name, "timeout": args.timeout})
        print(json.dumps(result) if args.json else format_pong(result), flush=True)
        answered += bool(result.get("ok"))
        if i + 1 < args.count:
            time.sleep(max(0.0, PING_INTERVAL - (time.monotonic() - started)))
    return 0 if answered else 1


def _state_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="DIR", default=None,
                   help=f"agent state directory (default: ${STATE_ENV} or /var/lib/enclave)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser(
        "ping", help="ping a peer through the overlay's authenticated session",
        description="Send authenticated PINGs to NAME through this system's session with it "
        "(not ICMP) and print, per PONG, the path (lan, direct-udp, direct-tcp, relay), the "
        "endpoint and the round-trip time. Exit status 0 when at least one PONG came back.")
    p.add_argument("name", help="the peer's system name (case-insensitive)")
    p.add_argument("-c", "--count", type=int, default=1, help="how many pings (default 1)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"wait this long for each PONG (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--json", action="store_true", help="one JSON object per ping")
    _state_arg(p)
    p.set_defaults(func=_guard(cmd_ping))

