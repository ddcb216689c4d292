"""`enclave bench`, `enclave bench crypto`, `enclave bench peer NAME`, `enclave bench serve`.

    enclave bench [--cipher aes256gcm|chacha20poly1305|both] [--duration S] [--offload|--no-offload]
                  [--json FILE] [--html FILE] [--flows tcp1,tcp4,udp64,udp512,udp1400,latency]
    enclave bench crypto [--cipher ...] [--sizes 64,512,1400,9000] [--seconds S] [--json FILE]
    enclave bench peer NAME [--state DIR] [--duration S] [--json FILE] [--html FILE]
    enclave bench serve                     # on the peer: iperf3 -s + UDP echo

Exit status: 0 when every stage ran (or was skipped on request), 1 when a stage failed or was
unavailable (the report says which and why; the figures that could be measured are still there),
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from enclave.bench.report import Report

CIPHER_CHOICES = ("aes256gcm", "chacha20poly1305", "both")


def _ciphers(choice: str | None) -> list[str]:
    from enclave.bench.crypto import available_ciphers

    try:
        have = available_ciphers()
    except ImportError:
        have = ["aes256gcm", "chacha20poly1305"]
    if choice in (None, "both"):
        return have
    if choice not in have:
        raise ValueError(f"cipher {choice} is not available here (have: {', '.join(have)})")
    return [str(choice)]


def _write_outputs(report: Report, args: argparse.Namespace) -> None:
    from enclave.bench.report import to_html

    if getattr(args, "json", None):
        Path(args.json).write_text(report.to_json() + "\n")
    if getattr(args, "html", None):
        Path(args.html).write_text(to_html(report))


def _status(report: Report) -> int:
    return 0 if all(s.status in ("ok", "skipped") for s in report.stages) else 1


def _console() -> Any:
    from rich.console import Console

    return Console()


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from enclave.bench import runner
    from enclave.bench.report import render

    flows = tuple(f for f in args.flows.split(",") if f) if args.flows else runner.ALL_FLOWS
    opts = runner.BenchOptions(
        ciphers=_ciphers(args.cipher),
        duration=args.duration,
        offload=args.offload,
        flows=flows,
        nat_a=args.nat_a,
        nat_b=args.nat_b,
        ping_count=args.ping_count,
        crypto=not args.no_crypto,
        overlay=not args.no_overlay,
        ceiling=not args.no_ceiling,
        workdir=Path(args.workdir) if args.workdir else None,
        keep_logs=bool(args.workdir),
        connect_timeout=args.connect_timeout,
    )
    console = _console()
    with Progress(TextColumn("{task.description:<40}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("enclave bench", total=runner.steps_for(opts))

        def step(text: str) -> None:
            bar.update(task, advance=1, description=text)

        report = runner.run(opts, progress=step)
    render(report, console)
    _write_outputs(report, args)
    return _status(report)


def cmd_crypto(args: argparse.Namespace) -> int:
    from enclave.bench import crypto
    from enclave.bench.report import render

    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        raise ValueError(f"--sizes must be comma-separated integers, got {args.sizes!r}") from None
    report = Report(meta={"mode": "crypto", "seconds_per_cell": args.seconds})
    try:
        report.crypto = crypto.run(_ciphers(args.cipher), sizes, seconds=args.seconds)
        report.stage("crypto", "ok")
    except ImportError as exc:
        report.stage("crypto", "unavailable", f"compiled fast path not built: {exc}")
    render(report, _console())
    _write_outputs(report, args)
    return _status(report)


def cmd_peer(args: argparse.Namespace) -> int:
    from enclave.bench import peer
    from enclave.bench.report import render

    report = peer.run(args.name, state=args.state, duration=args.duration,
                      ping_count=args.ping_count, overlay_ip=args.overlay_ip)
    render(report, _console())
    _write_outputs(report, args)
    return _status(report)


def cmd_serve(args: argparse.Namespace) -> int:
    from enclave.bench import peer

    return peer.serve()


def _guard(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from enclave.bench.flows import FlowError
        from enclave.bench.peer import PeerBenchError

        try:
            return int(func(args))
        except (ValueError, PeerBenchError, FlowError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, ValueError) else 1

    return run


def _outputs(p: argparse.ArgumentParser, html: bool = True) -> None:
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    if html:
        p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    from enclave.bench.runner import ALL_FLOWS

    bench = sub.add_parser(
        "bench",
        help="measure throughput, packet rate, latency and crypto (overlay vs raw path)",
        description="Without a sub-command (as root): build a netlab with two hosts behind "
        "different NATs and a platform, enrol both, set mutual intent, connect, and measure "
        "every flow over the overlay and over the raw path. " + (__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("--cipher", choices=CIPHER_CHOICES, default="both")
    bench.add_argument("--duration", type=float, default=5.0, metavar="S",
                       help="seconds per flow (default 5)")
    off = bench.add_mutually_exclusive_group()
    off.add_argument("--offload", dest="offload", action="store_true", default=None,
                     help="ask the agents for TSO/GRO offload")
    off.add_argument("--no-offload", dest="offload", action="store_false")
    bench.add_argument("--flows", default="", metavar="LIST",
                       help=f"comma-separated subset of {','.join(ALL_FLOWS)} (default: all)")
    bench.add_argument("--nat-a", default="full-cone", help="NAT type of site a")
    bench.add_argument("--nat-b", default="port-restricted", help="NAT type of site b")
    bench.add_argument("--ping-count", type=int, default=200, help="pings per latency figure")
    bench.add_argument("--connect-timeout", type=float, default=30.0, metavar="S",
                       help="how long to wait for the agents to connect (default 30)")
    bench.add_argument("--no-crypto", action="store_true", help="skip the in-process AEAD part")
    bench.add_argument("--no-overlay", action="store_true", help="raw path (and crypto) only")
    bench.add_argument("--no-ceiling", action="store_true",
                       help="skip the TAP-relay ceiling (overlay work without UDP)")
    bench.add_argument("--workdir", metavar="DIR",
                       help="keep platform/agent state and logs here (default: temporary)")
    _outputs(bench)
    bench.set_defaults(func=_guard(cmd_bench))

    bsub = bench.add_subparsers(dest="bench_command", metavar="COMMAND")
    p = bsub.add_parser("crypto", help="AEAD throughput in process: fast path vs PyNaCl")
    p.add_argument("--cipher", choices=CIPHER_CHOICES, default="both")
    p.add_argument("--sizes", default="64,512,1400,9000", help="frame sizes in bytes")
    p.add_argument("--seconds", type=float, default=0.5, help="seconds per cell")
    _outputs(p, html=True)
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

    from enclave.bench.gateway import register as register_gateway

    register_gateway(bsub, _outputs, _guard)

