"""`enclave bench` and its sub-commands crypto, peer, serve, gateway and platform.

    enclave bench [--cipher all|NAME,NAME...] [--repeat N] [--duration S] [--threads N,N...]
                  [--offload|--no-offload] [--json FILE] [--html FILE]
                  [--flows tcp1,tcp4,udp64,udp512,udp1400,latency]
    enclave bench crypto [--cipher ...] [--sizes 64,512,1400,9000] [--seconds S] [--json FILE]
    enclave bench peer NAME [--state DIR] [--duration S] [--json FILE] [--html FILE]
    enclave bench serve                     # on the peer: iperf3 -s + UDP echo
    enclave bench gateway [...]             # a gateway lab: overlay -> LAN host through a gateway
    enclave bench platform --agents N --nodes K [--db URL]   # the platform under load

Exit status: 0 when every stage ran (or was skipped on request), 1 when a stage failed or was
unavailable (the report says which and why; the figures that could be measured are still there),
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from enclave.bench import peer, runner
from enclave.bench.command import (
    CIPHER_HELP,
    Command,
    ciphers,
    console,
    finish,
    with_progress,
)
from enclave.bench.flows import FlowError
from enclave.bench.gateway import register as register_gateway
from enclave.bench.platform_cmd import register as register_platform
from enclave.bench.repeat import check_repeat, run_repeated
from enclave.bench.report import Report

# --path: (nat a, nat b, both sites drop UDP) of a lab whose pair can only use that path
PATH_LABS: dict[str, tuple[str, str, bool]] = {
    "direct-udp": ("full-cone", "port-restricted", False),
    "direct-tcp": ("port-restricted", "port-restricted", True),
    "relay-udp": ("symmetric", "symmetric", False),
    "relay-tls": ("symmetric", "symmetric", True),
}


def cmd_bench(args: argparse.Namespace) -> int:
    flows = tuple(f for f in args.flows.split(",") if f) if args.flows else runner.ALL_FLOWS
    opts = runner.BenchOptions(
        ciphers=ciphers(args.cipher),
        duration=args.duration,
        offload=args.offload,
        flows=flows,
        nat_a=PATH_LABS[args.path][0] if args.path else args.nat_a,
        nat_b=PATH_LABS[args.path][1] if args.path else args.nat_b,
        block_udp=PATH_LABS[args.path][2] if args.path else False,
        ping_count=args.ping_count,
        crypto=not args.no_crypto,
        overlay=not args.no_overlay,
        relay=not args.no_relay,
        path_moves=not args.no_path_moves,
        workdir=Path(args.workdir) if args.workdir else None,
        keep_logs=bool(args.workdir),
        connect_timeout=args.connect_timeout,
        threads=_threads(args.threads),
    )
    repeat = check_repeat(args.repeat)
    report, out = with_progress(
        "enclave bench", runner.steps_for(opts) * repeat,
        lambda step: run_repeated(
            repeat, lambda s, i: runner.run(runner.for_run(opts, i, repeat), progress=s), step))
    return finish(report, out, args)


def _threads(text: str | None) -> tuple[int | None, ...]:
    """--threads "1,2" -> (1, 2); absent -> (None,): the agents' own default."""
    if not text:
        return (None,)
    try:
        return tuple(int(t) for t in text.split(",") if t)
    except ValueError:
        raise ValueError(f"--threads must be comma-separated worker counts, got {text!r}") from None


def cmd_crypto(args: argparse.Namespace) -> int:
    # imported here: keeps `enclave` start-up fast (bench.crypto loads the compiled fast path)
    from enclave.bench import crypto

    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        raise ValueError(f"--sizes must be comma-separated integers, got {args.sizes!r}") from None
    report = Report(meta={"mode": "crypto", "seconds_per_cell": args.seconds})
    try:
        report.crypto = crypto.run(ciphers(args.cipher), sizes, seconds=args.seconds)
        report.stage("crypto", "ok")
    except ImportError as exc:
        report.stage("crypto", "unavailable", f"compiled fast path not built: {exc}")
    return finish(report, console(), args)


def cmd_peer(args: argparse.Namespace) -> int:
    report = peer.run(args.name, state=args.state, duration=args.duration,
                      ping_count=args.ping_count, overlay_ip=args.overlay_ip)
    return finish(report, console(), args)


def cmd_serve(args: argparse.Namespace) -> int:
    return peer.serve()


def _guard(func: Command) -> Command:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except (ValueError, peer.PeerBenchError, FlowError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, ValueError) else 1

    return run


def _outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    bench = sub.add_parser(
        "bench",
        help="measure throughput, packet rate, latency and crypto (overlay vs raw path)",
        description="Without a sub-command (as root): build a netlab with two hosts behind "
        "different NATs and a platform, enrol both, set mutual intent, connect, and measure "
        "every flow over the overlay and over the raw path. " + (__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("--cipher", default="all", metavar="LIST", help=CIPHER_HELP +
                       " (default all)")
    bench.add_argument("--repeat", type=int, default=1, metavar="N",
                       help="run the whole bench N times; every figure as median [min-max]")
    bench.add_argument("--duration", type=float, default=5.0, metavar="S",
                       help="seconds per flow (default 5)")
    off = bench.add_mutually_exclusive_group()
    off.add_argument("--offload", dest="offload", action="store_true", default=None,
                     help="ask the agents for TSO/GRO offload")
    off.add_argument("--no-offload", dest="offload", action="store_false")
    bench.add_argument("--threads", default=None, metavar="LIST",
                       help="the agents' data-plane workers (enclave up --threads), a comma "
                       "list runs the overlay once per entry, figures labelled 'CIPHER tN' "
                       "(default: the agents' default, one per core up to 4)")
    bench.add_argument("--flows", default="", metavar="LIST",
                       help=f"comma-separated subset of {','.join(runner.ALL_FLOWS)} "
                            "(default: all)")
    bench.add_argument("--nat-a", default="full-cone", help="NAT type of site a")
    bench.add_argument("--nat-b", default="port-restricted", help="NAT type of site b")
    bench.add_argument("--path", choices=sorted(PATH_LABS), default=None,
                       help="a lab whose pair must use this path (sets --nat-a/--nat-b; "
                       "relay-tls and direct-tcp: both sites drop UDP)")
    bench.add_argument("--ping-count", type=int, default=200, help="pings per latency figure")
    bench.add_argument("--connect-timeout", type=float, default=30.0, metavar="S",
                       help="how long to wait for the agents to connect (default 30)")
    bench.add_argument("--no-crypto", action="store_true", help="skip the in-process AEAD part")
    bench.add_argument("--no-overlay", action="store_true", help="raw path (and crypto) only")
    bench.add_argument("--no-relay", "--no-ceiling", dest="no_relay", action="store_true",
                       help="skip the TAP relay reference (the overlay's work without UDP)")
    bench.add_argument("--no-path-moves", action="store_true",
                       help="skip the path moves stage (cut and lift the direct path once)")
    bench.add_argument("--workdir", metavar="DIR",
                       help="keep platform/agent state and logs here, each --repeat run in "
                       "DIR/run-<i> (default: temporary)")
    _outputs(bench)
    bench.set_defaults(func=_guard(cmd_bench))

    bsub = bench.add_subparsers(dest="bench_command", metavar="COMMAND")
    p = bsub.add_parser("crypto", help="AEAD throughput in process: fast path vs PyNaCl")
    p.add_argument("--cipher", default="all", metavar="LIST", help=CIPHER_HELP)
    p.add_argument("--sizes", default="64,512,1400,9000", help="frame sizes in bytes")
    p.add_argument("--seconds", type=float, default=0.5, help="seconds per cell")
    _outputs(p)
    p.set_defaults(func=_guard(cmd_crypto))

    p = bsub.add_parser("peer", help="throughput and latency to a live peer (overlay, underlay)")
    p.add_argument("name", help="the peer's system name")
    p.add_argument("--state", metavar="DIR", default=None, help="agent state directory")
    p.add_argument("--duration", type=float, default=5.0, metavar="S")
    p.add_argument("--ping-count", type=int, default=100)
    p.add_argument("--overlay-ip", default=None,
                   help="the peer's overlay IP if the agent does not report it")
    _outputs(p)
    p.set_defaults(func=_guard(cmd_peer))

    p = bsub.add_parser("serve", help="run iperf3 -s and the UDP echo for `bench peer`")
    p.set_defaults(func=_guard(cmd_serve))

    register_gateway(bsub, _outputs, _guard)
    register_platform(bsub, _outputs, _guard)

