"""`enclave lab up|down|status|exec|selfcheck`: network-namespace labs for people.

A lab brought up with ``lab up`` persists until ``lab down``; its description lives in
/run/enclave-netlab/NAME.json (default NAME: "lab").

  enclave lab up --nat symmetric --nat full-cone --hosts 2 --public platform
  enclave lab up --ipv6 firewall                  (dual-stack sites, IPv6 behind a firewall)
  enclave lab up --ipv6 nat66 --ipv6-only         (IPv6-only sites behind NAT66)
  enclave lab status
  enclave lab exec a1 -- ip -br addr
  enclave lab down
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from enclave.netlab import lab as labmod
from enclave.netlab import netns, state
from enclave.netlab.topology import NatType, Netem, Site, Topology, V6Mode

DEFAULT_NAME = "lab"
SITE_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def register(sub: Any) -> None:
    p = sub.add_parser("lab", help="network-namespace labs with real NATs (root)")
    lab_sub = p.add_subparsers(dest="lab_command", metavar="ACTION")
    p.set_defaults(func=lambda _a: _usage(p))

    up = lab_sub.add_parser("up", help="build a lab and leave it running")
    up.add_argument("--name", default=DEFAULT_NAME, help="lab name (default: lab)")
    up.add_argument(
        "--nat",
        action="append",
        choices=[n.value for n in NatType],
        help="add a site (a, b, c, ...) behind this NAT type; repeatable "
        "(default: port-restricted and symmetric)",
    )
    up.add_argument("--hosts", type=int, default=1, help="hosts per site (default 1)")
    up.add_argument(
        "--public", action="append", help="public host name; repeatable (default: platform)"
    )
    up.add_argument("--mtu", type=int, default=1500, help="site uplink MTU (default 1500)")
    up.add_argument("--delay", type=float, default=0.0, help="uplink netem delay, ms")
    up.add_argument("--jitter", type=float, default=0.0, help="uplink netem jitter, ms")
    up.add_argument("--loss", type=float, default=0.0, help="uplink netem loss, percent")
    up.add_argument("--reorder", type=float, default=0.0, help="uplink netem reorder, percent")
    up.add_argument("--rate", type=float, default=None, help="uplink netem rate, Mbit/s")
    up.add_argument(
        "--ipv6",
        choices=[m.value for m in V6Mode],
        default=V6Mode.OFF.value,
        help="every site's IPv6: off (default), open, firewall (stateful), nat66",
    )
    up.add_argument("--ipv6-only", action="store_true", help="sites without IPv4 (needs --ipv6)")
    up.add_argument("--topology", help="JSON topology file (overrides the options above)")
    up.set_defaults(func=cmd_up)

    down = lab_sub.add_parser("down", help="tear a lab down")
    down.add_argument("--name", default=DEFAULT_NAME)
    down.add_argument("--all", action="store_true", help="every persistent lab")
    down.set_defaults(func=cmd_down)

    st = lab_sub.add_parser("status", help="list labs and their hosts")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    ex = lab_sub.add_parser("exec", help="run a command in a lab host: lab exec HOST -- CMD")
    ex.add_argument("--name", default=DEFAULT_NAME)
    ex.add_argument("host")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_exec)

    sc = lab_sub.add_parser("selfcheck", help="build a lab, verify every NAT type, tear down")
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(func=cmd_selfcheck)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _err(msg: str) -> int:
    print(f"enclave lab: {msg}", file=sys.stderr)
    return 1


def _need_root() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    return None


def build_topology(args: argparse.Namespace) -> Topology:
    if args.topology:
        with open(args.topology) as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError("topology file must hold a JSON object")
        return Topology.from_dict(data)
        # ValueError/KeyError/TypeError from bad files are reported by cmd_up
    nats = args.nat or [NatType.PORT_RESTRICTED.value, NatType.SYMMETRIC.value]
    if len(nats) > len(SITE_LETTERS):
        raise ValueError(f"at most {len(SITE_LETTERS)} sites from the command line")
    netem = None
    if args.delay or args.jitter or args.loss or args.reorder or args.rate:
        netem = Netem(
            delay_ms=args.delay,
            jitter_ms=args.jitter,
            loss_pct=args.loss,
            reorder_pct=args.reorder,
            rate_mbit=args.rate,
        )
    sites = [
        Site(SITE_LETTERS[i], nat=NatType(n), hosts=args.hosts, mtu=args.mtu, netem=netem,
             ipv6=V6Mode(args.ipv6), ipv4=not args.ipv6_only)
        for i, n in enumerate(nats)
    ]
    return Topology(sites=sites, public_hosts=args.public or ["platform"])


def cmd_up(args: argparse.Namespace) -> int:
    if (why := _need_root()) is not None:
        return _err(why)
    try:
        topo = build_topology(args)
        lab = labmod.Lab(topo, name=args.name, persistent=True)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        return _err(f"bad topology: {exc}")
    try:
        lab.start()
    except netns.NetlabError as exc:
        return _err(str(exc))
    lab.detach()
    print(f"lab {args.name!r} up (namespaces {lab.prefix}*); take it down with: enclave lab down")
    _print_lab(lab.describe())
    return 0


def _load(name: str) -> dict[str, Any] | None:
    return state.read_state(state.state_path(name))


def cmd_down(args: argparse.Namespace) -> int:
    if (why := _need_root()) is not None:
        return _err(why)
    with state.locked():
        if args.all:
            keys = [
                p.stem
                for p, d in state.all_states().items()
                if d is not None and d.get("persistent")
            ]
        else:
            keys = [args.name]
        for key in keys:
            try:
                path = state.state_path(key)
            except ValueError as exc:
                return _err(str(exc))
            data = state.read_state(path)
            if data is None or not data.get("persistent"):
                return _err(f"no lab named {key!r} is up")
            try:
                labmod.destroy(data)
            except netns.NetlabError as exc:
                return _err(f"teardown of {key!r} incomplete: {exc}")
            path.unlink(missing_ok=True)
            print(f"lab {key!r} down")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    labs = {p.stem: d for p, d in state.all_states().items() if d is not None}
    if args.json:
        print(json.dumps(labs, indent=2, sort_keys=True))
        return 0
    if not labs:
        print("no labs")
        return 0
    for key, data in labs.items():
        kind = "persistent" if data.get("persistent") else f"owned by pid {data.get('pid')}"
        present = set(netns.list_netns())
        missing = [n for n in data.get("namespaces", []) if n not in present]
        health = "ok" if not missing else f"{len(missing)} namespaces missing"
        print(f"lab {key!r} ({kind}, prefix {data.get('prefix')}, {health})")
        _print_lab(data)
    return 0


def _print_lab(data: dict[str, Any]) -> None:
    hosts = data.get("hosts", {})
    print(f"  {'HOST':<12} {'SITE':<8} {'NAT':<16} {'IP':<15} {'PUBLIC IP':<15} NETNS")
    for name, h in hosts.items():
        print(
            f"  {name:<12} {h.get('site') or '-':<8} {h.get('nat', ''):<16} "
            f"{h.get('ip', ''):<15} {h.get('public_ip', ''):<15} {h.get('netns', '')}"
        )
        if h.get("ip6"):
            print(f"  {'':<12} {'':<8} {'IPv6':<16} {h['ip6']}  public {h.get('public_ip6')}")


def cmd_exec(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        return _err("usage: enclave lab exec HOST -- CMD [ARGS...]")
    if (why := _need_root()) is not None:
        return _err(why)
    try:
        data = _load(args.name)
    except ValueError as exc:
        return _err(str(exc))
    if data is None:
        return _err(f"no lab named {args.name!r} is up")
    host = data.get("hosts", {}).get(args.host)
    if host is None:
        return _err(f"lab {args.name!r} has no host {args.host!r}")
    return subprocess.call(netns.exec_argv(host["netns"], cmd))


def cmd_selfcheck(args: argparse.Namespace) -> int:
    if (why := _need_root()) is not None:
        return _err(why)
    # imported here: keeps `enclave` start-up fast (the self-check's probes)
    from enclave.netlab.selfcheck import format_report, run_selfcheck

    try:
        report = run_selfcheck()
    except netns.NetlabError as exc:
        return _err(f"selfcheck could not build its lab: {exc}")
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "build_s": report.build_s,
                    "total_s": report.total_s,
                    "checks": [vars(c) for c in report.checks],
                },
                indent=2,
            )
        )
    else:
        print(format_report(report))
    return 0 if report.ok else 1
