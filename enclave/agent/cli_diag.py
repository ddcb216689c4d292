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
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from enclave.agent.cli_common import guard, state_dir
from enclave.agent.errors import AgentError
from enclave.agent.localapi import CLIENT_TIMEOUT, AgentNotRunning, call
from enclave.agent.ping import DEFAULT_TIMEOUT, MAX_TIMEOUT, format_pong
from enclave.agent.state import STATE_ENV, StateDir

if TYPE_CHECKING:  # imported where used: every agent command loads this file (intent, peers)
    from enclave.agent.netcheck import Target

PING_INTERVAL = 1.0  # seconds from one PING to the next (like ping(8))
MAX_COUNT = 10000


def cmd_ping(args: argparse.Namespace) -> int:
    if not 1 <= args.count <= MAX_COUNT:
        raise AgentError(f"-c must be 1..{MAX_COUNT}")
    if not 0 < args.timeout <= MAX_TIMEOUT:
        raise AgentError(f"--timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
    root = state_dir(args).root
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


def locate(state: StateDir, url: str) -> tuple[Target, list[dict[str, Any]] | None]:
    """The reflector (from the running agent's control channel, else the API URL's port and
    the next) and the relay measurements of the running agent's relayed peers (None: no
    agent)."""
    from enclave.agent.netcheck import Target, resolve

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or 443
    target = Target(host, (port, port + 1), port + 1)
    relays: list[dict[str, Any]] | None = None
    try:
        status = call(state.root, "status")
        peers = call(state.root, "peers")
    except AgentNotRunning:
        status, peers = {}, []
    else:
        relays = [{"peer": p.get("name"), "relay": p.get("relay"), "rtt_ms": p.get("relay_rtt_ms")}
                  for p in peers if isinstance(p, dict) and p.get("relay")]
    disc = status.get("discovery") if isinstance(status, dict) else None
    if isinstance(disc, dict) and isinstance(disc.get("udp"), list) and len(disc["udp"]) == 2:
        tcp = disc.get("tcp")
        target = Target(str(disc.get("host") or host), (int(disc["udp"][0]), int(disc["udp"][1])),
                        tcp if isinstance(tcp, int) else None)
    try:
        return Target(resolve(target.host), target.udp, target.tcp), relays
    except OSError as exc:
        raise AgentError(f"cannot resolve the platform host {target.host!r}: {exc}") from None


def cmd_netcheck(args: argparse.Namespace) -> int:
    from enclave.agent.netcheck import report_text, run_netcheck

    state = state_dir(args)
    record = state.load_enrolment()
    key = state.keystore().load_ed25519()
    target, relays = locate(state, record.url)
    report = run_netcheck(target, record.name, key, relays)
    print(json.dumps(report) if args.json else report_text(report))
    return 0 if report["udp"]["reachable"] or report["tcp"]["reachable"] else 1


def _state_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="DIR", default=None,
                   help=f"agent state directory (default: ${STATE_ENV} or /var/lib/enclave)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser(
        "ping", help="ping a peer through the overlay's authenticated session",
        description="Send authenticated PINGs to NAME through this system's session with it "
        "(not ICMP) and print, per PONG, the path (lan, direct-udp, direct-tcp, relay-udp, "
        "relay-tls), the "
        "endpoint and the round-trip time. Exit status 0 when at least one PONG came back.")
    p.add_argument("name", help="the peer's system name (case-insensitive)")
    p.add_argument("-c", "--count", type=int, default=1, help="how many pings (default 1)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"wait this long for each PONG (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--json", action="store_true", help="one JSON object per ping")
    _state_arg(p)
    p.set_defaults(func=guard(cmd_ping))

    p = sub.add_parser(
        "netcheck", help="NAT behaviour, platform reachability and relay RTT of this system",
        description="Ask the platform's reflector (signed with this system's key) how this "
        "system's NAT maps and filters UDP (RFC 4787 words and the cone/symmetric name), "
        "whether the platform is reachable over UDP and TCP, the reflected addresses, and the "
        "relay round-trip times the running agent measured. Exit status 1 when the platform "
        "is unreachable over both UDP and TCP.")
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    _state_arg(p)
    p.set_defaults(func=guard(cmd_netcheck))

