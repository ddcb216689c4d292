"""Agent daemon commands: `enclave up`, `enclave status`, `enclave peers`, `enclave intent ...`
(and, from agent/cli_diag.py, `enclave ping`, `enclave netcheck`).

`status` and `peers` ask the running agent over its root-only Unix socket (agent/localapi.py).
`intent add|remove|list` work whether or not the agent runs: the command signs an intent
statement with the system key from the state directory and sends it to the platform over the
pinned HTTPS connection (POST /v1/intents); a running agent hears the result at once over its
control channel (the platform pushes the new intent list and any introduction).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from enclave.agent.cli_common import guard, state_dir
from enclave.agent.cli_diag import register as register_diag
from enclave.agent.client import PinnedClient
from enclave.agent.errors import AgentError
from enclave.agent.localapi import call
from enclave.agent.state import STATE_ENV, StateDir
from enclave.agent.statusfmt import status_text
from enclave.cert.errors import KeyStoreError
from enclave.discovery.channel import INTENTS_PATH
from enclave.logfmt import FORMATS, LOG_FORMAT_ENV, use_format
from enclave.policy.intent import IntentError, IntentStatement, encode_signed

if TYPE_CHECKING:
    from enclave.agent.daemon import CmFactory



def _duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise AgentError(f"duration must look like 30m, 24h, 7d; got {text!r}")
    return int(text[:-1]) * units[text[-1]]


def cmd_up(args: argparse.Namespace) -> int:
    # imported here: the metrics option's check loads aiohttp, which `intent` never needs
    from enclave.agent.options import CONFIG_FILE, AgentOptions

    try:
        use_format(args.log_format)
    except ValueError as exc:
        raise AgentError(str(exc)) from None
    state = state_dir(args)
    opts = AgentOptions.resolve(state, {
        "port": args.port, "interface": args.interface, "mtu": args.mtu, "cipher": args.cipher,
        "tap": False if args.no_tap else None,
        "offload": False if args.no_offload else None,
        "aqm": False if args.no_aqm else None,
        "threads": args.threads,
        "dns": False if args.no_dns else None,
        "portmap": False if args.no_portmap else None,
        "metrics": args.metrics,
    })
    if args.check_config:
        print(f"configuration OK ({state.root / CONFIG_FILE}, environment, flags):")
        for key, value in opts.describe().items():
            print(f"  {key} = {value!r}")
        return 0
    from enclave.agent.daemon import run_agent  # uvloop, the control channel, the data plane

    run_agent(state, opts, _default_cm_factory() if opts.tap else None)
    return 0


def _default_cm_factory() -> CmFactory:
    """The connection manager `enclave up` runs: TAP + compiled data plane (agent/wiring.py).
    Imported here: the wiring loads cryptography's signing and the data plane's modules, which
    the other commands of this file never need."""
    from enclave.agent.wiring import agent_factory

    return agent_factory


def send_intent(state: StateDir, op: str, peer: str, exp: int | None = None) -> dict[str, Any]:
    record = state.load_enrolment()
    try:
        key = state.keystore().load_ed25519()
    except KeyStoreError as exc:
        raise AgentError(str(exc)) from None
    st = IntentStatement.new(op, record.name, peer, int(time.time()), exp=exp)
    client = PinnedClient(record.all_urls, record.pin)
    body: dict[str, object] = dict(encode_signed(st, key))
    _status, reply = client.json("POST", INTENTS_PATH, body)
    return reply


def cmd_intent(args: argparse.Namespace) -> int:
    state = state_dir(args)
    if args.intent_command == "list":
        reply = send_intent(state, "list", "")
        if args.json:
            print(json.dumps(reply))
        else:
            for row in reply.get("intents", []):
                mark = "mutual" if row.get("mutual") else "waiting"
                print(f"{row.get('peer'):16} {mark:8} {row.get('policy') or ''}")
        return 0
    exp = None
    if getattr(args, "expires", None):
        exp = int(time.time()) + _duration(args.expires)
    for peer in (p.upper() for p in args.peer):  # several peers: one JSON line each
        reply = send_intent(state, args.intent_command, peer, exp)
        print(json.dumps(reply) if args.json else f"intent {args.intent_command}: {peer}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    root = state_dir(args).root
    result = call(root, "status")
    if args.json:
        print(json.dumps(result))
        return 0
    print(status_text(result, call(root, "peers"), time.time()))
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    result = call(state_dir(args).root, "peers")
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'NAME':8} {'STATE':12} {'PATH':11} {'ENDPOINT':24} {'RTT':>8}")
    for p in result:
        rtt = "-" if p.get("rtt_ms") is None else f"{p['rtt_ms']:.1f}ms"
        print(f"{p['name']:8} {p['state'] or '-':12} {p.get('path') or '-':11} "
              f"{p.get('endpoint') or '-':24} {rtt:>8}")
    return 0


def _state_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="DIR", default=None,
                   help=f"agent state directory (default: ${STATE_ENV} or /var/lib/enclave)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser("up", help="run the agent in the foreground (systemd-friendly)")
    _state_arg(p)
    p.add_argument("--port", type=int, default=None, help="UDP/TCP data port (default 51820)")
    p.add_argument("--interface", default=None, help="TAP interface name (default enclave0)")
    p.add_argument("--mtu", type=int, default=None,
                   help="overlay (TAP) MTU (default 1398; 1382 when aegis256 is allowed)")
    p.add_argument("--cipher", choices=["auto", "aes256gcm", "chacha20poly1305", "aegis256"],
                   default=None, help="auto: AES256-GCM with AES-NI, else ChaCha20-Poly1305; "
                   "aegis256: prefer AEGIS-256 with peers that allow it too (opt-in)")
    p.add_argument("--no-tap", action="store_true",
                   help="control plane only: no TAP device / data plane")
    p.add_argument("--no-offload", action="store_true",
                   help="no TAP TSO/GRO or UDP GSO/GRO offloads (also ENCLAVE_OFFLOAD=0)")
    p.add_argument("--no-aqm", action="store_true",
                   help="no CoDel/ECN queue management in the data plane: queues wait in the "
                   "TAP ring and socket buffers unmanaged (also ENCLAVE_AQM=0)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="data-plane workers: N TAP queues and UDP sockets, a tx and an rx "
                   "thread each (default: the number of cores, at most 4; also "
                   "ENCLAVE_THREADS)")
    p.add_argument("--no-dns", action="store_true",
                   help="do not answer NAME.enclave on the overlay IP (also ENCLAVE_DNS=0)")
    p.add_argument("--no-portmap", action="store_true",
                   help="do not ask the site's router (PCP, NAT-PMP, UPnP-IGD) to map the data "
                   "port (also ENCLAVE_PORTMAP=0)")
    p.add_argument("--metrics", metavar="HOST:PORT", default=None,
                   help="serve Prometheus metrics at http://HOST:PORT/metrics "
                   "(also ENCLAVE_METRICS; default off)"),
    p.add_argument("--log-format", choices=FORMATS, default=None,
                   help=f"log lines as text or one JSON object each (default: ${LOG_FORMAT_ENV}"
                   " or text)")
    p.add_argument("--check-config", action="store_true",
                   help="check <state>/config.toml, the ENCLAVE_* variables and these flags, "
                   "print the options in effect and exit (1 and the reason when one is wrong)")
    p.set_defaults(func=guard(cmd_up, IntentError))

    p = sub.add_parser("status", help="this agent's status and one line per peer (asks the "
                       "running agent)")
    _state_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=guard(cmd_status, IntentError))
    p = sub.add_parser("peers", help="introduced / connected peers (asks the running agent)")
    _state_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=guard(cmd_peers, IntentError))

    intent = sub.add_parser("intent", help="declare intent to talk to another system")
    isub = intent.add_subparsers(dest="intent_command", metavar="COMMAND", required=True)
    p = isub.add_parser("add", help="sign and register intent for each PEER")
    p.add_argument("peer", nargs="+")
    p.add_argument("--expires", default=None, help="intent lifetime, e.g. 24h (default: none)")
    p = isub.add_parser("remove", help="withdraw intent for each PEER")
    p.add_argument("peer", nargs="+")
    p = isub.add_parser("list", help="intents this system holds (mutual or waiting)")
    for name in ("add", "remove", "list"):
        sp = isub.choices[name]
        _state_arg(sp)
        sp.add_argument("--json", action="store_true")
        sp.set_defaults(func=guard(cmd_intent, IntentError))

    register_diag(sub)
