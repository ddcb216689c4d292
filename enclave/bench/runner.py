"""`enclave bench` without arguments: a lab, a platform, two agents, and every flow twice.

Stages, in order (each recorded in the report as ok / unavailable / failed / skipped)::

    lab        netlab: site a (a1) and site b (b1) behind different NATs, "platform" public host
    raw-path   port forwards on both site routers for the bench ports, so the raw path runs
               a1 -> NAT a -> internet -> NAT b -> b1, the same links the overlay crosses
    platform   enclave platform init + serve on the platform host
    enrol      enclave enrol on a1 and b1 (overlay IPs from --json)
    agent      are `enclave up`, `enclave intent`, `enclave peers` there yet?
    per cipher (and per --threads entry: figures labelled "CIPHER tN", N data-plane workers):
      up         enclave up --state DIR on a1 and b1 (cipher + offload + threads via env/flags)
      intent     a1 adds b1, then b1 adds a1 (t0 = the second intent)
      connected  poll `enclave peers --json` until b1 shows connected; set-up time, then the
                 settled path (bench/pathmove.py; a pair that must relay: setup_relay_ms too)
      overlay    flows to b1's overlay IP; agent CPU seconds per GB and peak RSS
      path moves (the first direct-udp run) the direct path is cut and lifted at site a's
                 router: direct_to_relay_ms, relay_to_direct_ms (bench/pathmove.py)
    raw        the same flows to b1's public address
    relay reference   TCP 1 stream over enclave.bench.relayref's TAP relay (no UDP leg)
    crypto     in-process AEAD (enclave bench crypto), short

          a1 (site a, NAT)                      b1 (site b, NAT)
          iperf3 -c / udpgen send / ping  --->  iperf3 -s / udpgen recv / echo
          overlay: 100.64.x.y (TAP, agent)      raw: NAT b's public IP, forwarded ports

A stage that cannot run says why and the run goes on with what it can measure: no overlay figure
is ever filled in unless the overlay carried it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from enclave import __version__
from enclave.agent.cli import register as register_agent_commands
from enclave.bench import crypto, flows, pathmove, procstat, relayref
from enclave.bench.repeat import run_workdir
from enclave.bench.report import Figure, Report
from enclave.dataplane.mtu import DEFAULT_OVERLAY_MTU
from enclave.netlab import Lab, NatType, Site, Topology, netns
from enclave.spawn import enclave_argv

ALL_FLOWS = ("tcp1", "tcp4", "udp64", "udp512", "udp1400", "latency")
PLATFORM_PORT = 8443
CONNECTED_STATES = {"connected", "established", "up", "active"}
CONNECT_TIMEOUT_S = 30.0
AGENT_COMMANDS = ("up", "intent", "peers", "status")
OVERLAY_UNAVAILABLE = "overlay: agent data plane not available yet"


@dataclass
class BenchOptions:
    ciphers: list[str]
    duration: float = 5.0
    offload: bool | None = None
    flows: tuple[str, ...] = ALL_FLOWS
    nat_a: str = "full-cone"
    nat_b: str = "port-restricted"
    block_udp: bool = False  # both sites' routers drop UDP (--path relay-tls / direct-tcp)
    ping_count: int = 200
    crypto: bool = True
    crypto_seconds: float = 0.1
    overlay: bool = True
    relay: bool = True
    path_moves: bool = True  # cut and lift the direct path once (direct_to_relay_ms ...)
    workdir: Path | None = None
    keep_logs: bool = False
    connect_timeout: float = CONNECT_TIMEOUT_S
    threads: tuple[int | None, ...] = (None,)  # agents' data-plane workers; None: their default

    def __post_init__(self) -> None:
        unknown = set(self.flows) - set(ALL_FLOWS)
        if unknown:
            raise ValueError(f"unknown flows: {', '.join(sorted(unknown))} "
                             f"(choose from {', '.join(ALL_FLOWS)})")
        if self.duration <= 0:
            raise ValueError("--duration must be > 0")
        if not self.ciphers:
            raise ValueError("no cipher to measure")
        if not self.threads or any(t is not None and not 1 <= t <= 64 for t in self.threads):
            raise ValueError("--threads takes worker counts 1..64")


def run_label(cipher: str, threads: int | None) -> str:
    """What one overlay run's figures are labelled with: the cipher, and the agents' worker
    count when --threads set it ("aes256gcm t2")."""
    return cipher if threads is None else f"{cipher} t{threads}"


Progress = Callable[[str], None]


def no_progress(_: str) -> None:
    pass


def steps_for(opts: BenchOptions) -> int:
    """Progress steps a full run takes (for the progress bar's total)."""
    per_path = _flow_steps(opts)
    overlay = (4 + per_path) * len(opts.ciphers) * len(opts.threads) if opts.overlay else 0
    relay_steps = 1 + len(opts.ciphers) if wants_relay(opts) else 0
    return 5 + overlay + per_path + relay_steps + (1 if opts.crypto else 0)


def wants_relay(opts: BenchOptions) -> bool:
    """The relay reference runs with the single-stream TCP flow it is compared with."""
    return opts.relay and opts.overlay and "tcp1" in opts.flows


def _flow_steps(opts: BenchOptions) -> int:
    n = 0
    for f in opts.flows:
        n += 4 if f in ("tcp1", "tcp4") else 2 if f == "latency" else 1
    return n


# -- the agent CLI ------------------------------------------------------------------------------


def agent_commands() -> dict[str, set[str]]:
    """The agent's sub-commands of `enclave` (enclave.agent.cli), with their option strings."""
    parser = argparse.ArgumentParser(prog="enclave")
    register_agent_commands(parser.add_subparsers())
    out: dict[str, set[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                opts: set[str] = set()
                for a in sub._actions:
                    opts.update(a.option_strings)
                out[name] = opts
    return out


def missing_agent_commands() -> list[str]:
    have = agent_commands()
    return [c for c in AGENT_COMMANDS if c not in have]


def parse_peers(text: str) -> list[dict[str, Any]]:
    """`enclave peers --json` output: a list of peer objects (or {"peers": [...]})."""
    data = json.loads(text)
    if isinstance(data, dict):
        data = data.get("peers", [])
    if not isinstance(data, list):
        raise ValueError("peers JSON is not a list")
    return [p for p in data if isinstance(p, dict)]


# -- the run -----------------------------------------------------------------------------------


@dataclass
class BenchAgent:
    host: Any
    state: Path
    name: str
    overlay_ip: str
    proc: subprocess.Popen[Any] | None = None
    log: Path | None = None


@dataclass
class BenchContext:
    opts: BenchOptions
    report: Report
    progress: Progress
    lab: Any = None
    work: Path = Path()
    a: Any = None
    b: Any = None
    agents: dict[str, BenchAgent] = field(default_factory=dict)
    platform_pid: int | None = None  # `platform serve` (its relay's CPU per GB moved)


@contextlib.contextmanager
def timed_stage(ctx: BenchContext, name: str) -> Iterator[dict[str, str]]:
    """Time a stage; the body sets box["status"]/["detail"]; an exception marks it failed."""
    box = {"status": "ok", "detail": ""}
    t0 = time.monotonic()
    try:
        yield box
    except (flows.FlowError, OSError, subprocess.SubprocessError, ValueError, RuntimeError,
            KeyError) as exc:
        ctx.report.stage(name, "failed", f"{type(exc).__name__}: {exc}", time.monotonic() - t0)
        raise StageFailed(name) from exc
    ctx.report.stage(name, box["status"], box["detail"], time.monotonic() - t0)


class StageFailed(Exception):
    pass


def run(opts: BenchOptions, progress: Progress = no_progress) -> Report:
    """Run every stage that can run; always returns a report (the lab is always torn down)."""
    report = Report(meta={
        "version": __version__,
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "duration_s": opts.duration,
        "ciphers": ",".join(opts.ciphers),
        "offload": "default" if opts.offload is None else ("on" if opts.offload else "off"),
        "threads": ",".join("default" if t is None else str(t) for t in opts.threads),
        "nat_a": opts.nat_a,
        "nat_b": opts.nat_b,
        "block_udp": opts.block_udp,
        "flows": ",".join(opts.flows),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    })
    ctx = BenchContext(opts=opts, report=report, progress=progress)
    in_workdir(ctx, "enclave-bench-", lambda: _run_lab(ctx))
    if opts.crypto:
        progress("crypto")
        t0 = time.monotonic()
        try:
            report.crypto = crypto.run(opts.ciphers, seconds=opts.crypto_seconds)
            report.stage("crypto", "ok", "", time.monotonic() - t0)
        except (ImportError, RuntimeError, ValueError) as exc:
            report.stage("crypto", "unavailable", f"compiled fast path: {exc}",
                         time.monotonic() - t0)
    report.meta["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return report


def in_lab(ctx: BenchContext, b_hosts: int, describe: Callable[[], str],
           body: Callable[[], None]) -> None:
    """Stage "lab": site a (one host) behind --nat-a, site b (b_hosts hosts) behind --nat-b and a
    public platform host; ``describe`` (run once the lab is up) sets ctx.a/ctx.b and returns the
    stage detail. Then run ``body``; agents are stopped and the lab torn down afterwards."""
    opts = ctx.opts
    ctx.progress("lab")
    try:
        with timed_stage(ctx, "lab") as box:
            if os.geteuid() != 0:
                raise RuntimeError("enclave bench builds network namespaces: run it as root")
            topo = Topology(sites=[Site("a", nat=NatType(opts.nat_a), block_udp=opts.block_udp),
                                   Site("b", nat=NatType(opts.nat_b), hosts=b_hosts,
                                        block_udp=opts.block_udp)],
                            public_hosts=["platform"])
            ctx.lab = Lab(topo)
            ctx.report.meta["lab_prefix"] = ctx.lab.prefix
            ctx.lab.start()
            box["detail"] = describe()
    except StageFailed:
        return
    try:
        body()
    finally:
        stop_agents(ctx.agents.values())
        ctx.lab.close()


def _run_lab(ctx: BenchContext) -> None:
    def describe() -> str:
        ctx.a, ctx.b = ctx.lab.host("a1"), ctx.lab.host("b1")
        return (f"a1 {ctx.a.ip} behind {ctx.opts.nat_a} ({ctx.a.public_ip}), "
                f"b1 {ctx.b.ip} behind {ctx.opts.nat_b} ({ctx.b.public_ip})")

    in_lab(ctx, 1, describe, lambda: _run_in_lab(ctx))


def _run_in_lab(ctx: BenchContext) -> None:
    opts = ctx.opts
    ctx.progress("raw path: port forwards")
    raw_ok = True
    try:
        with timed_stage(ctx, "raw-path") as box:
            for host in (ctx.a, ctx.b):
                forward_bench_ports(ctx.lab, host)
            box["detail"] = f"raw target {ctx.b.public_ip} (ports {list(flows.BENCH_UDP_PORTS)})"
    except StageFailed:
        raw_ok = False

    overlay_ready = opts.overlay
    if not opts.overlay:
        ctx.report.stage("overlay", "skipped", "--no-overlay")
    else:
        overlay_ready = _platform_and_enrol(ctx)
    if overlay_ready:
        missing = missing_agent_commands()
        if missing:
            overlay_ready = False
            ctx.report.stage("agent", "unavailable",
                             f"{OVERLAY_UNAVAILABLE} (missing commands: "
                             f"{', '.join('enclave ' + m for m in missing)})")
        else:
            ctx.report.stage("agent", "ok", "enclave up / intent / peers present")
    blocked = ""
    for cipher, threads in [(c, t) for c in opts.ciphers for t in opts.threads]:
        label = run_label(cipher, threads)
        if not overlay_ready:
            break
        if blocked:  # the same agents will not connect with another cipher either
            ctx.report.stage(f"overlay ({label})", "skipped", blocked)
            continue
        try:
            _overlay_run(ctx, cipher, threads)
        except StageFailed as exc:
            if str(exc).startswith(("up ", "intent ", "connected ")):
                blocked = f"overlay did not come up with {label} (stage {exc})"
    if raw_ok:
        ctx.progress("raw flows")
        with contextlib.suppress(StageFailed), timed_stage(ctx, "flows raw") as box:
            errors = measure_path(ctx, "raw", str(ctx.b.public_ip), cipher=None)
            if errors:
                box["detail"] = "; ".join(errors)
    if wants_relay(opts):
        _relay_reference(ctx)


def _relay_reference(ctx: BenchContext) -> None:
    """Stage "relay reference": TapRelay between a1 and b1 (see enclave.bench.relayref)."""
    opts = ctx.opts
    with contextlib.suppress(StageFailed), timed_stage(ctx, "relay reference") as box:
        rows = relayref.measure(ctx.a, ctx.b, ciphers=opts.ciphers, duration=opts.duration,
                                offload=opts.offload is not False, mtu=DEFAULT_OVERLAY_MTU,
                                progress=ctx.progress)
        raw = next((f.raw for f in ctx.report.figures if f.key == "tcp1_ab"), None)
        for row in rows:
            over = ctx.report.figure("tcp1_ab", row.cipher) if row.cipher else None
            versus = (f"overlay / relay {over.overlay / row.gbit_s:.2f}x; "
                      if over is not None and over.overlay and row.gbit_s else "")
            what = "no AEAD" if row.cipher is None else \
                f"AEAD every {relayref.segment_for(DEFAULT_OVERLAY_MTU)} B"
            note = row.note or (f"{versus}{row.frames} frames, "
                                f"{row.open_failures} open failures")
            ctx.report.figures.append(Figure(
                "relay_plain" if row.cipher is None else "relay_aead", "reference",
                f"TAP relay reference (no UDP), {what}, a1->b1", "Gbit/s", row.cipher,
                row.gbit_s, raw, True, note))
            if row.open_failures:
                box["status"] = "failed"
        box["detail"] = ", ".join(
            f"{r.cipher or 'plain'} " + ("-" if r.gbit_s is None else f"{r.gbit_s:.2f} Gbit/s")
            for r in rows)


def for_run(opts: BenchOptions, run: int, runs: int) -> BenchOptions:
    """The options of run ``run`` of ``runs`` (--repeat): its own --workdir (run_workdir)."""
    return replace(opts, workdir=run_workdir(opts.workdir, run, runs))


def in_workdir(ctx: BenchContext, prefix: str, body: Callable[[], None]) -> None:
    """Run body with ctx.work set: --workdir if given (kept), else a temporary directory that is
    removed afterwards unless logs are to be kept."""
    opts = ctx.opts
    tmp = None
    if opts.workdir is None:
        tmp = tempfile.mkdtemp(prefix=prefix)
        ctx.work = Path(tmp)
    else:
        ctx.work = opts.workdir
        ctx.work.mkdir(parents=True, exist_ok=True)
    try:
        body()
    finally:
        if tmp is not None and not opts.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)


def start_platform(ctx: BenchContext) -> Path:
    """Stage "platform": init + serve on the lab's platform host; returns its data directory.

    Raises StageFailed (recorded in the report) when it cannot start.
    """
    platform = ctx.lab.public_host("platform")
    data = ctx.work / "platform"
    url = f"https://{platform.ip}:{PLATFORM_PORT}"
    ctx.progress("platform")
    with timed_stage(ctx, "platform") as box:
        res = subprocess.run(
            enclave_argv("platform", "init", "--data", str(data), "--url", url, "--org", "bench"),
            capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"platform init: {res.stderr.strip()}")
        with open(ctx.work / "platform.log", "wb") as log:
            proc = platform.popen(enclave_argv("platform", "serve", "--data", str(data)),
                                  stdout=log, stderr=subprocess.STDOUT)
            ctx.platform_pid = proc.pid
        _wait_tcp(platform, str(platform.ip), PLATFORM_PORT, 20.0)
        box["detail"] = url
    return data


def platform_cli(data: Path, *args: str) -> str:
    """Run `enclave platform ARGS --data DATA` on this host (the store is local); its stdout."""
    res = subprocess.run(enclave_argv("platform", *args, "--data", str(data)),
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"platform {' '.join(args[:2])}: {res.stderr.strip()[-300:]}")
    return res.stdout.strip()


def enrol_host(ctx: BenchContext, host: Any, token: str) -> BenchAgent:
    """`enclave enrol` inside the host's namespace; records and returns the agent."""
    state = ctx.work / f"state-{host.name}"
    res = host.run(enclave_argv("enrol", token, "--state", str(state), "--json",
                            "--hostname", host.name), timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"enrol on {host.name}: {res.stderr.strip()[-300:]}")
    info = json.loads(res.stdout)
    agent = BenchAgent(host=host, state=state, name=info["name"], overlay_ip=info["overlay_ip"])
    ctx.agents[host.name] = agent
    return agent


def _platform_and_enrol(ctx: BenchContext) -> bool:
    try:
        data = start_platform(ctx)
        ctx.progress("enrol")
        with timed_stage(ctx, "enrol") as box:
            token = platform_cli(data, "keys", "create", "--uses", "2")
            for host in (ctx.a, ctx.b):
                enrol_host(ctx, host, token)
            box["detail"] = ", ".join(f"{h} = {a.name} {a.overlay_ip}"
                                      for h, a in ctx.agents.items())
    except StageFailed:
        return False
    return True


def _wait_tcp(host: Any, ip: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout

    def probe() -> bool:
        try:
            with socket.create_connection((ip, port), timeout=1):
                return True
        except OSError:
            return False

    while time.monotonic() < deadline:
        if host.call(probe):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listening on {ip}:{port} after {timeout:.0f}s")


def forward_bench_ports(lab: Any, host: Any) -> None:
    """Let the bench ports through ``host``'s site router to ``host`` (DNAT when it translates).

    Own table ``ip enclave_bench`` for the DNAT (priority before the lab's dstnat, so it wins);
    an accept for exactly these flows inserted at the top of the lab's forward filter.
    """
    site = lab.site(host.site)
    tcp = f"tcp dport {flows.IPERF_PORT}"
    udp = "udp dport { " + ", ".join(str(p) for p in flows.BENCH_UDP_PORTS) + " }"
    script: list[str] = []
    if site.nat.translates:
        script += [
            "table ip enclave_bench {",
            "  chain pre {",
            "    type nat hook prerouting priority dstnat - 10; policy accept;",
            f'    iifname "wan" {tcp} dnat ip to {host.ip}',
            f'    iifname "wan" {udp} dnat ip to {host.ip}',
            "  }",
            "}",
        ]
    netns.run(netns.exec_argv(site.router_netns, ["nft", "-f", "-"]),
              input="\n".join(script) + "\n" if script else "")
    listing = netns.run(netns.exec_argv(site.router_netns, ["nft", "list", "tables"])).stdout
    if "enclave_lab" in listing:
        for match in (tcp, udp):
            netns.run(netns.exec_argv(site.router_netns, [
                "nft", "insert", "rule", "ip", "enclave_lab", "forward",
                "iifname", "wan", "ip", "daddr", str(host.ip), *match.split(), "accept"]))


# -- overlay -----------------------------------------------------------------------------------


def _overlay_run(ctx: BenchContext, asked: str, threads: int | None = None) -> None:
    """One overlay run with cipher `asked` and `threads` workers (None: the agents' default);
    its figures and stages are labelled run_label(asked, threads)."""
    opts = ctx.opts
    a, b = ctx.agents["a1"], ctx.agents["b1"]
    up_opts = agent_commands().get("up", set())
    cipher = run_label(asked, threads)
    ctx.progress(f"up ({cipher})")
    try:
        with timed_stage(ctx, f"up ({cipher})") as box:
            t_spawn = time.time()  # wall clock: the agents' ready_at stamps compare
            for agent in (a, b):
                argv = ["up", "--state", str(agent.state)]
                if "--cipher" in up_opts:
                    argv += ["--cipher", asked]
                if opts.offload is False and "--no-offload" in up_opts:
                    argv.append("--no-offload")  # `up` has no --offload: on is its default
                env = {**os.environ, "ENCLAVE_CIPHER": asked}
                if threads is not None:
                    env["ENCLAVE_THREADS"] = str(threads)
                if opts.offload is not None:
                    env["ENCLAVE_OFFLOAD"] = "1" if opts.offload else "0"
                agent.log = ctx.work / f"agent-{agent.host.name}-{cipher.replace(' ', '-')}.log"
                with open(agent.log, "wb") as log:
                    agent.proc = agent.host.popen(enclave_argv(*argv), stdout=log,
                                                  stderr=subprocess.STDOUT, env=env)
            ready_s = max(_wait_ready(agent, opts.connect_timeout) for agent in (a, b)) - t_spawn
            ctx.report.figures.append(Figure(
                "startup_ms", "setup", "agent start-up (exec -> candidates reported)",
                "ms", cipher, ready_s * 1000, None, False,
                "both agents started together; the later one"))
            box["detail"] = (f"pids {a.proc.pid if a.proc else '-'}, "
                             f"{b.proc.pid if b.proc else '-'}; ready after {ready_s:.1f} s")
        ctx.progress(f"intent ({cipher})")
        with timed_stage(ctx, f"intent ({cipher})") as box:
            _cli_ok(a.host, "intent", "add", b.name, "--state", str(a.state))
            t0 = time.monotonic()
            t0_wall = time.time()  # namespaces share the clock: agents' wall stamps compare
            _cli_ok(b.host, "intent", "add", a.name, "--state", str(b.state))
            box["detail"] = f"{a.name} <-> {b.name}"
        ctx.progress(f"connected ({cipher})")
        with timed_stage(ctx, f"connected ({cipher})") as box:
            peer, waited = _wait_connected(a, b.name, t0, opts.connect_timeout)
            used = session_cipher(peer)
            if used is not None and used != asked:  # never label one cipher's figures another's
                box["status"] = "unavailable"
                box["detail"] = f"asked for {asked}, the session uses {used}: not measured"
                return
            setup_ms, note = setup_time_ms(peer, t0_wall, waited)
            first_path = peer.get("path")
            # relay first: the relay may carry the first frame; flows run on the settled path
            peer = pathmove.settle(lambda: _peer_entry(a, b.name), peer)
            path = peer.get("path")
            ctx.report.paths[cipher] = path
            ctx.report.figures.append(Figure(
                "setup_ms", "setup", "connection set-up (second intent -> first frame)", "ms",
                cipher, float(setup_ms), None, False, f"{note}; first on {first_path}"))
            if pathmove.relayed(path):
                ctx.report.figures.append(pathmove.relay_setup(peer, cipher))
            box["detail"] = (f"path {path} (first {first_path}), {setup_ms:.0f} ms, "
                             f"cipher {used or 'not reported'}")
        ctx.progress(f"overlay check ({cipher})")
        with timed_stage(ctx, f"overlay check ({cipher})") as box:
            echo = flows.start_echo_server(b.host)
            try:
                probe = flows.latency(a.host, b.overlay_ip, count=5, interval=0.05, timeout=1.0)
            finally:
                flows.stop(echo)
            if probe.received == 0:
                box["status"] = "unavailable"
                box["detail"] = (f"{OVERLAY_UNAVAILABLE} (connected, but no UDP echo over "
                                 f"{b.overlay_ip})")
                return
        with timed_stage(ctx, f"flows overlay ({cipher})") as box:
            errors = measure_path(ctx, "overlay", b.overlay_ip, cipher=cipher)
            record_peak_rss(ctx, (a, b), cipher)
            if errors:
                box["detail"] = "; ".join(errors)
        if path == "direct-udp" and opts.path_moves and not any(f.key == "relay_to_direct_ms"
                                            for f in ctx.report.figures):
            ctx.progress(f"path moves ({cipher})")  # once a run: the first direct-udp run
            with timed_stage(ctx, f"path moves ({cipher})") as box:
                # a datagram every 0.2 s (echoed) keeps traffic on the session, as when a
                # site's path dies under use
                echo = flows.start_echo_server(b.host)
                try:
                    with pathmove.Traffic(a.host.socket(), (b.overlay_ip, flows.ECHO_PORT)):
                        got = pathmove.moves(lambda: _peer_entry(a, b.name),
                                             ctx.lab.site("a").router_netns,
                                             str(ctx.b.public_ip), cipher)
                finally:
                    flows.stop(echo)
                ctx.report.figures.extend(got)
                box["detail"] = "; ".join(f"{f.key} {f.overlay:.0f} ms ({f.note})" for f in got)
    finally:
        stop_agents((a, b))
        for agent, peer_name in ((a, b.name), (b, a.name)):
            with contextlib.suppress(subprocess.SubprocessError, RuntimeError):
                _cli_ok(agent.host, "intent", "remove", peer_name, "--state", str(agent.state))


def session_cipher(peer: dict[str, Any]) -> str | None:
    """The cipher the agent reports for the peer's session, spelled as --cipher spells it
    ("aes256_gcm" -> "aes256gcm"); None when it reports none."""
    value = peer.get("cipher")
    if not isinstance(value, str) or not value:
        return None
    return value.lower().replace("_", "").replace("-", "")


def setup_time_ms(peer: dict[str, Any], intent_wall: float, polled_s: float,
                  ) -> tuple[float, str]:
    """Second intent -> first authenticated frame, from the best source the agent offers:
    its wall-clock ``connected_at`` (exact), else its ``setup_ms`` (introduction -> first
    frame: leaves out intent -> introduction), else our polling (50 ms granularity)."""
    connected_at = peer.get("connected_at")
    if isinstance(connected_at, int | float) and 0 <= connected_at - intent_wall < 3600:
        return (connected_at - intent_wall) * 1000, "second intent -> connected_at"
    setup_ms = peer.get("setup_ms")
    if isinstance(setup_ms, int | float) and setup_ms >= 0:
        return float(setup_ms), "agent's setup_ms (introduction -> first frame)"
    return polled_s * 1000, "polled (agent reports no timestamps)"


def log_tail(path: Path | None, n: int = 400) -> str:
    if path is None or not path.exists():
        return ""
    return path.read_text(errors="replace").strip()[-n:]


def record_peak_rss(ctx: BenchContext, agents: Iterable[BenchAgent], cipher: str) -> None:
    """A peak-RSS figure (VmHWM) for each running agent."""
    for agent in agents:
        assert agent.proc is not None
        rss = procstat.peak_rss_bytes(agent.proc.pid)
        ctx.report.figures.append(Figure(
            f"rss_{agent.host.name}", "memory", f"agent {agent.host.name} peak RSS",
            "MiB", cipher, None if rss is None else rss / 2**20, None, False, "VmHWM"))


def stop_agents(agents: Iterable[BenchAgent]) -> None:
    """Stop every agent that runs (SIGTERM, then SIGKILL after 5 s); idempotent."""
    for agent in agents:
        if agent.proc is not None:
            flows.stop(agent.proc, grace=5)
            agent.proc = None


def _wait_ready(agent: BenchAgent, timeout: float) -> float:
    """Wait until the agent reports itself ready (`enclave status`: ``ready_at``, the wall time
    it first reported candidates with a classified NAT over a connected control channel), so
    that set-up time starts from a settled agent, not from interpreter start-up. Returns
    ``ready_at``; raises if the agent exits or never gets there."""
    t0 = time.monotonic()
    last = "no answer"
    while time.monotonic() - t0 < timeout:
        assert agent.proc is not None
        if agent.proc.poll() is not None:
            raise RuntimeError(f"enclave up on {agent.host.name} exited "
                               f"({agent.proc.returncode}): {log_tail(agent.log)}")
        res = agent.host.run(enclave_argv("status", "--json", "--state", str(agent.state)),
                             timeout=30)
        if res.returncode == 0:
            try:
                st = json.loads(res.stdout)
            except ValueError:
                st = {}
            last = f"platform {st.get('platform', {}).get('state')}, nat {st.get('nat')}"
            if isinstance(st.get("ready_at"), (int, float)):
                return float(st["ready_at"])
        time.sleep(0.1)
    raise RuntimeError(f"enclave up on {agent.host.name} not ready after {timeout:.0f} s "
                       f"({last})")


def _cli_ok(host: Any, *args: str) -> str:
    res = host.run(enclave_argv(*args), timeout=30)
    if res.returncode != 0:
        raise RuntimeError(f"enclave {' '.join(args[:2])}: {res.stderr.strip()[-300:]}")
    return str(res.stdout)


def _peer_entry(agent: BenchAgent, peer_name: str) -> dict[str, Any] | None:
    """`agent`'s `enclave peers --json` entry for `peer_name` (None: none, or no answer)."""
    res = agent.host.run(enclave_argv("peers", "--json", "--state", str(agent.state)),
                         timeout=15)
    if res.returncode != 0:
        return None
    try:
        return next((p for p in parse_peers(res.stdout) if p.get("name") == peer_name), None)
    except ValueError:
        return None


def _wait_connected(agent: BenchAgent, peer_name: str, t0: float,
                    timeout: float) -> tuple[dict[str, Any], float]:
    deadline = t0 + timeout
    last: Any = None
    while time.monotonic() < deadline:
        res = agent.host.run(enclave_argv("peers", "--json", "--state", str(agent.state)),
                             timeout=15)
        if res.returncode == 0:
            try:
                peers = parse_peers(res.stdout)
            except ValueError:
                peers = []
            for peer in peers:
                if peer.get("name") == peer_name:
                    last = peer
                    if str(peer.get("state", "")).lower() in CONNECTED_STATES:
                        return peer, time.monotonic() - t0
        time.sleep(0.05)
    raise RuntimeError(f"overlay: {peer_name} not connected within {timeout:.0f}s "
                       f"(last peers entry: {last})")


# -- flows over one path -----------------------------------------------------------------------

_TCP_LABELS = {
    ("tcp1", False): "TCP 1 stream a1->b1",
    ("tcp1", True): "TCP 1 stream b1->a1",
    ("tcp4", False): "TCP 4 streams a1->b1",
    ("tcp4", True): "TCP 4 streams b1->a1",
}


def _put(ctx: BenchContext, path: str, cipher: str | None, key: str, group: str, label: str,
         unit: str, value: float | None, higher: bool = True, note: str = "") -> None:
    """Record ``value`` for ``path``: the raw value goes into every cipher's figure of ``key``."""
    report = ctx.report
    if path == "overlay":
        fig = report.figure(key, cipher)
        if fig is None:
            raw = next((f.raw for f in report.figures if f.key == key), None)
            fig = Figure(key, group, label, unit, cipher, None, raw, higher, note)
            report.figures.append(fig)
        fig.overlay = value
        if note:
            fig.note = note
        return
    matched = [f for f in report.figures if f.key == key]
    for f in matched:
        f.raw = value
    if not matched:
        report.figures.append(Figure(key, group, label, unit, None, None, value, higher, note))


def measure_path(ctx: BenchContext, path: str, server_ip: str, *, cipher: str | None) -> list[str]:
    """Every selected flow a1 -> ``server_ip`` (b1); figures into the report; errors returned."""
    opts = ctx.opts
    a, b = ctx.a, ctx.b
    errors: list[str] = []
    pids = [ag.proc.pid for ag in ctx.agents.values() if ag.proc is not None] \
        if path == "overlay" else []
    if pids and ctx.platform_pid is not None:
        pids.append(ctx.platform_pid)
    cpu0 = {pid: procstat.cpu_seconds(pid) for pid in pids}
    moved = 0
    tcp = [f for f in opts.flows if f in ("tcp1", "tcp4")]
    server = None
    try:
        if tcp or "latency" in opts.flows:
            if shutil.which("iperf3") is None:
                errors.append("iperf3 not installed (apt-get install iperf3): TCP flows skipped")
                tcp = []
            else:
                server = flows.start_iperf3_server(b)
        for name in tcp:
            streams = 1 if name == "tcp1" else 4
            for reverse in (False, True):
                label = _TCP_LABELS[(name, reverse)]
                ctx.progress(f"{path} {label}")
                key = f"{name}_{'ba' if reverse else 'ab'}"
                try:
                    res = flows.tcp_throughput(a, server_ip, duration=opts.duration,
                                               streams=streams, reverse=reverse)
                except flows.FlowError as exc:
                    errors.append(f"{label}: {exc}")
                    _put(ctx, path, cipher, key, "throughput", label, "Gbit/s", None)
                    continue
                moved += res.receiver_bytes
                note = "" if res.retransmits is None else f"{res.retransmits} retransmits"
                _put(ctx, path, cipher, key, "throughput", label, "Gbit/s", res.gbit_s,
                     note=note if path == "overlay" else "")
        cpu1 = {pid: procstat.cpu_seconds(pid) for pid in pids}
        for size in (64, 512, 1400):
            if f"udp{size}" not in opts.flows:
                continue
            ctx.progress(f"{path} UDP {size} B")
            try:
                ur = flows.udp_rate(a, b, server_ip, size=size, duration=opts.duration)
            except flows.FlowError as exc:
                errors.append(f"UDP {size} B: {exc}")
                continue
            _put(ctx, path, cipher, f"udp{size}_pps", "udp", f"UDP {size} B packet rate a1->b1",
                 "kpps", ur.receiver_pps / 1e3, note=f"sent {ur.sent}, received {ur.received}")
            _put(ctx, path, cipher, f"udp{size}_loss", "udp", f"UDP {size} B loss a1->b1", "%",
                 ur.loss_pct, higher=False)
        if "latency" in opts.flows:
            _latency(ctx, path, cipher, server_ip, errors)
    finally:
        if server is not None:
            flows.stop(server)
    if path == "overlay" and moved and pids:
        for ag in ctx.agents.values():
            if ag.proc is None:
                continue
            used = cpu1[ag.proc.pid] - cpu0[ag.proc.pid]
            _put(ctx, path, cipher, f"cpu_per_gb_{ag.host.name}", "cpu",
                 f"agent {ag.host.name} CPU per GB moved (TCP flows)", "CPU s/GB",
                 used / (moved / 1e9), higher=False,
                 note=f"{used:.2f} CPU s over {moved / 1e9:.2f} GB")
        if ctx.platform_pid is not None:  # its relay's work on a relayed path; ~0 if direct
            used = cpu1[ctx.platform_pid] - cpu0[ctx.platform_pid]
            _put(ctx, path, cipher, "cpu_per_gb_platform", "cpu",
                 "platform (relay) CPU per GB moved (TCP flows)", "CPU s/GB",
                 used / (moved / 1e9), higher=False,
                 note=f"{used:.2f} CPU s over {moved / 1e9:.2f} GB")
    return errors


def _latency(ctx: BenchContext, path: str, cipher: str | None, server_ip: str,
             errors: list[str]) -> None:
    opts = ctx.opts
    a, b = ctx.a, ctx.b
    echo = flows.start_echo_server(b)
    try:
        ctx.progress(f"{path} latency idle")
        try:
            idle = flows.latency(a, server_ip, count=opts.ping_count)
            _latency_figures(ctx, path, cipher, "idle", idle)
        except flows.FlowError as exc:
            errors.append(f"latency idle: {exc}")
        ctx.progress(f"{path} latency under load")
        if shutil.which("iperf3") is None:
            return
        box: dict[str, flows.LatencyResult] = {}
        count = max(20, min(opts.ping_count, int(opts.duration / 0.006) - 20))

        def pings() -> None:
            time.sleep(0.3)  # let the load ramp up
            box["r"] = flows.latency(a, server_ip, count=count)

        try:
            flows.tcp_throughput(a, server_ip, duration=opts.duration + 1, streams=1,
                                 during=pings)
        except flows.FlowError as exc:
            errors.append(f"latency under load (iperf3): {exc}")
        if "r" in box:
            _latency_figures(ctx, path, cipher, "load", box["r"])
    finally:
        flows.stop(echo)


def _latency_figures(ctx: BenchContext, path: str, cipher: str | None, kind: str,
                     res: flows.LatencyResult) -> None:
    text = "idle" if kind == "idle" else "under TCP load"
    note = f"{res.received}/{res.sent} replies"
    for pct, value in (("p50", res.p50_us), ("p99", res.p99_us)):
        _put(ctx, path, cipher, f"rtt_{kind}_{pct}", "latency", f"RTT {pct} {text}", "us",
             value, higher=False, note=note)
