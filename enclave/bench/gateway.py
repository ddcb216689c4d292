"""`enclave bench gateway`: client -> gateway -> plain LAN host, against the raw path.

Stages, in order (each recorded in the report as ok / unavailable / failed / skipped)::

    lab        netlab: site a (a1, the client) and site b (b1 the gateway, b2 a plain LAN host
               without an agent), each behind its NAT; "platform" public host
    raw-path   port forwards on site b's router to b2: the raw path runs
               a1 -> NAT a -> internet -> NAT b -> b2, the same links the gateway path crosses
    platform   enclave platform init + serve on the platform host
    enrol      a1 with tag "ops", b1 untagged; `systems gateway b1 --routes <site b LAN> --nat`;
               `policy add --from tag:ops --gateway b1 --routes <LAN> --acl <the bench ports>`
    per cipher:
      up         enclave up on a1 and b1
      gateway    b1's renewed certificate introduced; a1 routes the LAN via b1 (agent status);
                 set-up time; a UDP echo from b2 comes back through the gateway
      flows gateway ({cipher})   every flow a1 -> b2's LAN address (through the overlay + b1's
                 forwarding and masquerade); agent CPU per GB, peak RSS
    raw        the same flows a1 -> NAT b's public address, forwarded to b2

          a1 (site a, NAT)                b1 (site b)                      b2 (site b LAN)
          iperf3 -c / udpgen ping  ==overlay==> enclave0 -> forward+NAT -> iperf3 -s / udpgen echo
          raw:  a1 -> NAT a -> internet -> NAT b (DNAT bench ports) ------> b2

The report is the `enclave bench` one (rich table, --json, --html): "overlay" is the gateway
path, "raw" the direct path. No gateway figure is filled in unless the gateway carried it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave import __version__
from enclave.agent.errors import AgentError
from enclave.agent.localapi import call
from enclave.bench import flows, pathmove
from enclave.bench.command import (
    CIPHER_HELP,
    Command,
    ciphers,
    finish,
    with_progress,
)
from enclave.bench.repeat import check_repeat, run_repeated
from enclave.bench.report import Figure, Report
from enclave.bench.runner import (
    ALL_FLOWS,
    BenchAgent,
    BenchContext,
    BenchOptions,
    Progress,
    StageFailed,
    enrol_host,
    for_run,
    forward_bench_ports,
    in_lab,
    in_workdir,
    log_tail,
    measure_path,
    no_progress,
    platform_cli,
    record_peak_rss,
    start_platform,
    stop_agents,
    timed_stage,
)
from enclave.spawn import enclave_argv

DEFAULT_FLOWS = ("tcp1", "tcp4", "latency")
GATEWAY_ACL = ",".join([f"tcp:{flows.IPERF_PORT}",
                        *(f"udp:{p}" for p in flows.BENCH_UDP_PORTS), "icmp"])
POLICY = "bench-gw"


@dataclass
class GatewayBench:
    """What a gateway run needs besides BenchOptions: the lab's roles."""

    client: str = "a1"
    gateway: str = "b1"
    lan_host: str = "b2"


def steps_for(opts: BenchOptions) -> int:
    n = 0
    for f in opts.flows:
        n += 4 if f in ("tcp1", "tcp4") else 2 if f == "latency" else 1
    return 4 + (3 + n) * len(opts.ciphers) + n


def run(opts: BenchOptions, progress: Progress = no_progress) -> Report:
    """Run every stage that can run; always returns a report (the lab is always torn down)."""
    report = Report(meta={
        "mode": "gateway",
        "version": __version__,
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "duration_s": opts.duration,
        "ciphers": ",".join(opts.ciphers),
        "nat_a": opts.nat_a,
        "nat_b": opts.nat_b,
        "flows": ",".join(opts.flows),
        "overlay_column": "gateway path: a1 -> overlay -> b1 (forward, masquerade) -> b2",
        "raw_column": "direct path: a1 -> NAT a -> internet -> NAT b (port forward) -> b2",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    ctx = BenchContext(opts=opts, report=report, progress=progress)
    in_workdir(ctx, "enclave-bench-gw-", lambda: _run_lab(ctx, GatewayBench()))
    for f in report.figures:  # measure_path names the server b1; here it is the LAN host b2
        f.label = f.label.replace("a1->b1", "a1->b2").replace("b1->a1", "b2->a1")
    return report


def _run_lab(ctx: BenchContext, roles: GatewayBench) -> None:
    def describe() -> str:
        ctx.a, ctx.b = ctx.lab.host(roles.client), ctx.lab.host(roles.lan_host)
        gw = ctx.lab.host(roles.gateway)
        lan = ctx.lab.site("b").lan
        ctx.report.meta["lan"] = str(lan)
        return (f"client a1 {ctx.a.ip} behind {ctx.opts.nat_a}; gateway b1 {gw.ip} and "
                f"LAN host b2 {ctx.b.ip} on {lan} behind {ctx.opts.nat_b}")

    in_lab(ctx, 2, describe, lambda: _run_in_lab(ctx, roles))


def _run_in_lab(ctx: BenchContext, roles: GatewayBench) -> None:
    ctx.progress("raw path: port forwards")
    raw_ok = True
    try:
        with timed_stage(ctx, "raw-path") as box:
            forward_bench_ports(ctx.lab, ctx.b)
            box["detail"] = (f"raw target {ctx.b.public_ip} -> b2 {ctx.b.ip} "
                             f"(ports {list(flows.BENCH_UDP_PORTS)})")
    except StageFailed:
        raw_ok = False
    if _platform_and_enrol(ctx, roles):
        for cipher in ctx.opts.ciphers:
            try:
                _gateway_run(ctx, roles, cipher)
            except StageFailed:
                continue
    if raw_ok:
        ctx.progress("raw flows")
        with contextlib.suppress(StageFailed), timed_stage(ctx, "flows raw") as box:
            errors = measure_path(ctx, "raw", str(ctx.b.public_ip), cipher=None)
            if errors:
                box["detail"] = "; ".join(errors)


def _platform_and_enrol(ctx: BenchContext, roles: GatewayBench) -> bool:
    try:
        data = start_platform(ctx)
        ctx.progress("enrol + gateway policy")
        with timed_stage(ctx, "enrol") as box:
            tokens = {roles.client: platform_cli(data, "keys", "create", "--tags", "ops"),
                      roles.gateway: platform_cli(data, "keys", "create")}
            for host_name, token in tokens.items():
                enrol_host(ctx, ctx.lab.host(host_name), token)
            gw = ctx.agents[roles.gateway]
            lan = ctx.report.meta["lan"]
            platform_cli(data, "systems", "gateway", gw.name, "--routes", lan, "--nat")
            platform_cli(data, "policy", "add", "--name", POLICY, "--from", "tag:ops",
                         "--gateway", gw.name, "--routes", lan, "--acl", GATEWAY_ACL)
            box["detail"] = (", ".join(f"{h} = {a.name} {a.overlay_ip}"
                                       for h, a in ctx.agents.items())
                             + f"; {gw.name} serves {lan} (masquerade), acl {GATEWAY_ACL}")
    except StageFailed:
        return False
    return True


def _status(agent: BenchAgent) -> dict[str, Any] | None:
    """The running agent's status over its local API (the socket is on the shared filesystem)."""
    try:
        return dict(call(agent.state, "status", timeout=5))
    except (AgentError, OSError, ValueError):
        return None


def gateway_route(status: dict[str, Any] | None, lan: str) -> dict[str, Any] | None:
    """The client's route entry for ``lan`` from its status ({"via", "gateway"}), if any."""
    gw = (status or {}).get("gateway") or {}
    routes = gw.get("routes") if isinstance(gw, dict) else None
    entry = routes.get(lan) if isinstance(routes, dict) else None
    # the kernel route is in before the choice is recorded (apply runs off the agent's loop)
    return entry if isinstance(entry, dict) and entry.get("gateway") else None


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not within {timeout:.0f}s (last: {last!r})")


def _gateway_run(ctx: BenchContext, roles: GatewayBench, cipher: str) -> None:
    opts = ctx.opts
    client, gw = ctx.agents[roles.client], ctx.agents[roles.gateway]
    lan = str(ctx.report.meta["lan"])
    ctx.progress(f"up ({cipher})")
    try:
        with timed_stage(ctx, f"up ({cipher})") as box:
            t0 = time.monotonic()
            for agent in (client, gw):
                argv = ["up", "--state", str(agent.state), "--cipher", cipher]
                if opts.offload is False:
                    argv.append("--no-offload")
                agent.log = ctx.work / f"agent-{agent.host.name}-{cipher}.log"
                with open(agent.log, "wb") as log:
                    agent.proc = agent.host.popen(enclave_argv(*argv), stdout=log,
                                                  stderr=subprocess.STDOUT)
            for agent in (client, gw):
                proc = agent.proc
                assert proc is not None

                def started(a: BenchAgent = agent, p: subprocess.Popen[Any] = proc) -> bool:
                    return _status(a) is not None or p.poll() is not None

                _wait(started, 20, f"enclave up on {agent.host.name}")
                if proc.poll() is not None:
                    raise RuntimeError(f"enclave up on {agent.host.name} exited "
                                       f"({proc.returncode}): {log_tail(agent.log)}")
            box["detail"] = f"pids {client.proc.pid if client.proc else '-'}, " \
                            f"{gw.proc.pid if gw.proc else '-'}"
        ctx.progress(f"gateway ({cipher})")
        with timed_stage(ctx, f"gateway ({cipher})") as box:
            route = _wait(lambda: gateway_route(_status(client), lan), opts.connect_timeout,
                          f"client route to {lan} via the gateway")
            if route.get("gateway") != gw.name:
                raise RuntimeError(f"{lan} is routed via {route.get('gateway')}, not {gw.name}")
            echo = flows.start_echo_server(ctx.b)
            try:
                probe = _wait(lambda: _probe(ctx), max(5.0, opts.connect_timeout / 2),
                              f"UDP echo from b2 {ctx.b.ip} through the gateway")
            except RuntimeError as exc:  # say where the frames went
                raise RuntimeError(f"{exc}; {_drops(client, gw.name)}") from None
            finally:
                flows.stop(echo)
            ready_ms = (time.monotonic() - t0) * 1000
            peer = next((p for p in _peers(client) if p.get("name") == gw.name), {})
            # relay first: the session may start on the relay; the path it settles on
            peer = pathmove.settle(
                lambda: next((p for p in _peers(client) if p.get("name") == gw.name), None),
                peer)
            path = peer.get("path")
            ctx.report.paths[cipher] = path
            ctx.report.figures.append(Figure(
                "gateway_ready_ms", "setup", "enclave up -> first echo from the LAN host", "ms",
                cipher, ready_ms, None, False, f"client -> gateway path {path}"))
            box["detail"] = (f"{lan} via {gw.name} ({route.get('via')}), path {path}, "
                             f"ready in {ready_ms:.0f} ms, "
                             f"probe rtt p50 {probe.p50_us or 0:.0f} us")
        with timed_stage(ctx, f"flows gateway ({cipher})") as box:
            before = _gw_counters(gw)
            errors = measure_path(ctx, "overlay", str(ctx.b.ip), cipher=cipher)
            after = _gw_counters(gw)
            routed = after.get("routed", 0) - before.get("routed", 0)
            dropped = {k: after.get(k, 0) - before.get(k, 0) for k in after
                       if k != "routed" and after.get(k, 0) != before.get(k, 0)}
            record_peak_rss(ctx, (client, gw), cipher)
            detail = [f"gateway filter: {routed} frames routed"
                      + (f", dropped {dropped}" if dropped else "")]
            box["detail"] = "; ".join(detail + errors)
    finally:
        stop_agents((client, gw))


def _drops(agent: BenchAgent, peer_name: str) -> str:
    """The agent's data-plane counters for the peer that are not zero (drops by reason)."""
    peer = next((p for p in _peers(agent) if p.get("name") == peer_name), None)
    if peer is None:
        return f"{agent.host.name} does not list {peer_name}"
    counters = peer.get("dataplane")
    if not isinstance(counters, dict):
        return f"{agent.host.name} reports no data-plane counters for {peer_name}"
    shown = {k: v for k, v in counters.items() if isinstance(v, int) and v}
    return f"{agent.host.name}'s counters for {peer_name}: {shown}"


def _probe(ctx: BenchContext) -> flows.LatencyResult | None:
    try:
        res = flows.latency(ctx.a, str(ctx.b.ip), count=3, interval=0.05, timeout=0.5)
    except flows.FlowError:
        return None
    return res if res.received else None


def _peers(agent: BenchAgent) -> list[dict[str, Any]]:
    try:
        return [p for p in call(agent.state, "peers", timeout=5) if isinstance(p, dict)]
    except (AgentError, OSError, ValueError):
        return []


def _gw_counters(agent: BenchAgent) -> dict[str, int]:
    """The gateway filter's counters summed over peers ({} if the agent does not say)."""
    gw = (_status(agent) or {}).get("gateway") or {}
    counters = gw.get("counters") if isinstance(gw, dict) else None
    total: dict[str, int] = {}
    if isinstance(counters, dict):
        for values in counters.values():
            if isinstance(values, dict):
                for k, v in values.items():
                    if isinstance(v, int):
                        total[k] = total.get(k, 0) + v
    return total


# -- `enclave bench gateway` -------------------------------------------------------------------


def cmd_gateway(args: argparse.Namespace) -> int:
    flow_list = tuple(f for f in args.flows.split(",") if f) if args.flows else DEFAULT_FLOWS
    opts = BenchOptions(
        ciphers=ciphers(args.cipher), duration=args.duration, offload=args.offload,
        flows=flow_list, nat_a=args.nat_a, nat_b=args.nat_b, ping_count=args.ping_count,
        crypto=False, workdir=Path(args.workdir) if args.workdir else None,
        keep_logs=bool(args.workdir), connect_timeout=args.connect_timeout,
    )
    repeat = check_repeat(args.repeat)
    report, out = with_progress(
        "enclave bench gateway", steps_for(opts) * repeat,
        lambda step: run_repeated(
            repeat, lambda s, i: run(for_run(opts, i, repeat), progress=s), step))
    return finish(report, out, args)


def register(bsub: argparse._SubParsersAction,  # type: ignore[type-arg,unused-ignore]
             outputs: Callable[[argparse.ArgumentParser], None],
             guard: Callable[[Command], Command]) -> None:
    p = bsub.add_parser(
        "gateway", help="client -> gateway -> plain LAN host vs the raw path (netlab, root)",
        description=(__doc__ or "").split("\n\n")[0] + " Builds a netlab with a client site "
        "and a gateway site (gateway + a plain LAN host), a platform, a gateway policy, and "
        "measures every flow through the gateway and over the raw path.")
    p.add_argument("--cipher", default="aes256gcm", metavar="LIST",
                   help=CIPHER_HELP + " (default aes256gcm)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run it N times; every figure as median [min-max]")
    p.add_argument("--duration", type=float, default=5.0, metavar="S",
                   help="seconds per flow (default 5)")
    p.add_argument("--no-offload", dest="offload", action="store_false", default=None,
                   help="agents without TSO/GRO offload")
    p.add_argument("--flows", default="", metavar="LIST",
                   help=f"comma-separated subset of {','.join(ALL_FLOWS)} "
                        f"(default: {','.join(DEFAULT_FLOWS)})")
    p.add_argument("--nat-a", default="port-restricted", help="NAT type of the client's site")
    p.add_argument("--nat-b", default="full-cone", help="NAT type of the gateway's site")
    p.add_argument("--ping-count", type=int, default=200, help="pings per latency figure")
    p.add_argument("--connect-timeout", type=float, default=30.0, metavar="S")
    p.add_argument("--workdir", metavar="DIR",
                   help="keep platform/agent state and logs here, each --repeat run in "
                   "DIR/run-<i> (default: temporary)")
    outputs(p)
    p.set_defaults(func=guard(cmd_gateway))
