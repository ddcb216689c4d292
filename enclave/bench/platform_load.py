"""`enclave bench platform`: the control plane under load, on loopback.

    enclave platform init --db ... --url https://127.0.0.1:P --url https://127.0.0.2:P ...
    node i: enclave platform serve --listen 127.0.0.(i+1):P   (K processes, one store)
         ^  N simulated agents in this process: real Ed25519 keys and CSRs, POST /v1/enrol,
         |  the agent's own ControlClient (TLS WebSocket, pinned, challenge signed), agent i
         |  on node i mod K, signed mutual intents for pairs (2j, 2j+1)
    then node 1 is killed (SIGKILL) and its agents fail over to the others

Stages and figures (Report, rendered like the other benches):
  enrol        enrol_per_s        enrolments per second (CONCURRENCY requests in flight)
  connect      connect_per_s      control channels welcomed per second (all started at once)
               agents_connected   agents connected at the end of the stage
  introduce    intro_p50_ms/p99   the pair's second intent sent -> both agents hold the
                                  introduction (the first intent was stated before)
  resources    cpu_s_per_1k, rss_mb_per_1k, rss_mb_total: the platform processes (all nodes)
  failover     reconnect_s        node 1 killed -> every agent it served welcomed by another
The store: --db URL; else with --nodes > 1 (or --store postgresql) a throwaway PostgreSQL
cluster (enclave.platform.pgcluster, when its binaries are installed); else SQLite.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import os
import resource
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from enclave.agent.control import ControlClient
from enclave.bench.procstat import cpu_seconds, peak_rss_bytes
from enclave.bench.report import Figure, Report
from enclave.cert.ca import build_csr
from enclave.cert.enrolment import PATH_ENROL, EnrolmentToken, b64url
from enclave.cert.keys import Ed25519PrivateKey, generate_private_key
from enclave.discovery.channel import INTENTS_PATH
from enclave.platform.pgcluster import PostgresCluster, PostgresMissing
from enclave.policy.intent import IntentStatement, encode_signed

CONCURRENCY = 32  # HTTP requests (enrolments, intents) in flight at once
START_TIMEOUT = 30.0
Progress = Callable[[str], None]


@dataclass(frozen=True)
class PlatformBenchOptions:
    agents: int = 1000
    nodes: int = 2
    db: str | None = None  # postgresql://... (else: a throwaway cluster, or SQLite)
    store: str | None = None  # "sqlite" | "postgresql" (default: postgresql when nodes > 1)
    timeout: float = 300.0  # per stage
    failover: bool = True
    workdir: Path | None = None

    def check(self) -> None:
        if self.agents < 2 or self.agents % 2:
            raise ValueError("--agents must be an even number, at least 2 (agents meet in pairs)")
        if not 1 <= self.nodes <= 8:
            raise ValueError("--nodes must be between 1 and 8")
        if self.store not in (None, "sqlite", "postgresql"):
            raise ValueError("--store must be sqlite or postgresql")
        if self.nodes > 1 and (self.store == "sqlite"):
            raise ValueError("several nodes need one PostgreSQL store (--db URL, or "
                             "--store postgresql)")


@dataclass
class SimAgent:
    """One simulated agent: its key, name, node, and when it learnt of each peer."""

    index: int
    key: Ed25519PrivateKey
    name: str = ""
    client: ControlClient | None = None
    welcomed: asyncio.Event = field(default_factory=asyncio.Event)
    intros: dict[str, float] = field(default_factory=dict)  # peer -> monotonic time
    intro_seen: asyncio.Event = field(default_factory=asyncio.Event)

    def on_connected(self, welcome: dict[str, Any]) -> None:
        self.welcomed.set()

    def on_message(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == "introduce" and isinstance(msg.get("peer"), str):
            self.intros.setdefault(str(msg["peer"]), time.monotonic())
            self.intro_seen.set()

    def on_disconnected(self) -> None:
        self.welcomed.clear()


@dataclass
class Node:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of the values; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _enclave(*args: str) -> list[str]:
    return [sys.executable, "-m", "enclave", *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _client_ssl() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the ControlClient checks the pin; enrolment is measured
    return ctx


class PlatformBench:
    def __init__(self, opts: PlatformBenchOptions, work: Path, report: Report) -> None:
        self.opts = opts
        self.work = work
        self.report = report
        self.nodes: list[Node] = []
        self.cluster: PostgresCluster | None = None
        self.env = {**os.environ, "ENCLAVE_PLATFORM_KEY_PASSPHRASE": secrets.token_hex(16),
                    "ENCLAVE_PLATFORM_MAX_PER_ADDRESS": str(opts.agents * 2 + 100),
                    "ENCLAVE_PLATFORM_MAX_UNAUTH": str(opts.agents * 2 + 100),
                    "ENCLAVE_PLATFORM_IDLE_TIMEOUT": "60"}
        self.env.pop("ENCLAVE_PLATFORM_DB", None)
        self.store = "sqlite"

    # -- the platform --------------------------------------------------------------------------

    def start_platform(self) -> str:
        """init + K nodes; the enrolment token."""
        db = self.opts.db
        if db is None and (self.opts.nodes > 1 or self.opts.store == "postgresql"):
            self.cluster = PostgresCluster.start()
            db = self.cluster.create_database()
        if db is not None:
            self.env["ENCLAVE_PLATFORM_DB"] = db
            self.store = "postgresql"
        port, relay = _free_port(), _free_port()
        self.env["ENCLAVE_PLATFORM_RELAY"] = f":{relay}"
        hosts = [f"127.0.0.{i + 1}" for i in range(self.opts.nodes)]
        urls = [f"https://{h}:{port}" for h in hosts]
        data = self.work / "node1"
        init = subprocess.run(
            _enclave("platform", "init", "--data", str(data), "--org", "bench",
                     *(a for u in urls for a in ("--url", u))),
            env=self.env, capture_output=True, text=True, timeout=120, check=False)
        if init.returncode != 0:
            raise RuntimeError(f"platform init failed: {init.stderr.strip()[-500:]}")
        for i, (host, url) in enumerate(zip(hosts, urls, strict=True)):
            node_data = data if i == 0 else self.work / f"node{i + 1}"
            log = self.work / f"node{i + 1}.log"
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    _enclave("platform", "serve", "--data", str(node_data), "--listen",
                             f"{host}:{port}"),
                    env=self.env, stdout=out, stderr=subprocess.STDOUT)
            self.nodes.append(Node(url, proc, log))
        deadline = time.monotonic() + START_TIMEOUT
        for node in self.nodes:
            while "serving on" not in node.log.read_text(errors="replace"):
                if node.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"platform node {node.url} did not start: "
                                       f"{node.log.read_text(errors='replace')[-800:]}")
                time.sleep(0.1)
        keys = subprocess.run(_enclave("platform", "keys", "create", "--unlimited", "--data",
                                       str(data)),
                              env=self.env, capture_output=True, text=True, timeout=60,
                              check=False)
        if keys.returncode != 0:
            raise RuntimeError(f"keys create failed: {keys.stderr.strip()[-500:]}")
        return keys.stdout.strip()

    def stop_platform(self) -> None:
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(timeout=5)
        if self.cluster is not None:
            self.cluster.stop()

    def resources(self) -> tuple[float, float]:
        """(CPU seconds, sum of peak RSS in MB) of the nodes so far."""
        cpu = sum(cpu_seconds(n.proc.pid) for n in self.nodes)
        rss = sum(peak_rss_bytes(n.proc.pid) or 0 for n in self.nodes) / 1e6
        return cpu, rss

    # -- the load ------------------------------------------------------------------------------

    async def load(self, token_text: str, progress: Progress) -> None:
        token = EnrolmentToken.decode(token_text)
        n, k = self.opts.agents, self.opts.nodes
        agents = [SimAgent(i, generate_private_key()) for i in range(n)]
        idle_cpu, idle_rss = self.resources()  # the started, idle nodes
        conn = aiohttp.TCPConnector(ssl=_client_ssl(), limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=conn) as http:
            await self._enrol(http, token, agents)
            progress("enrolled")
            tasks = await self._connect(token, agents)
            progress("connected")
            try:
                await self._introduce(http, agents)
                progress("introduced")
                cpu, rss = self.resources()
                per_k = 1000 / n
                self._figure("cpu_s_per_1k", "cpu", "platform CPU per 1,000 agents", "s",
                             (cpu - idle_cpu) * per_k, False,
                             f"all {k} node(s): enrol, connect, introduce")
                self._figure("rss_mb_per_1k", "memory", "platform peak RSS per 1,000 agents",
                             "MB", (rss - idle_rss) * per_k, False,
                             f"above the idle nodes' {idle_rss:.0f} MB")
                self._figure("rss_mb_total", "memory", "platform peak RSS, all nodes", "MB",
                             rss, False, f"sum over {k} node(s)")
                if k > 1 and self.opts.failover:
                    await self._failover(agents)
                else:
                    self.report.stage("failover", "skipped", "one node" if k == 1 else
                                      "--no-failover")
                progress("failover")
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def _figure(self, key: str, group: str, label: str, unit: str, value: float | None,
                higher: bool = True, note: str = "") -> None:
        self.report.figures.append(Figure(key, group, label, unit, None, value, None, higher,
                                          note))

    async def _enrol(self, http: aiohttp.ClientSession, token: EnrolmentToken,
                     agents: list[SimAgent]) -> None:
        sem = asyncio.Semaphore(CONCURRENCY)
        failures: list[str] = []
        urls = token.urls

        async def one(agent: SimAgent) -> None:
            csr = base64.b64encode(build_csr(agent.key)).decode()
            body = {"key_id": token.key_id, "secret": b64url(token.secret), "csr": csr,
                    "hostname": f"sim-{agent.index}"}
            async with sem:
                url = urls[agent.index % len(urls)] + PATH_ENROL
                async with http.post(url, json=body) as resp:
                    reply = await resp.json()
            if resp.status >= 400 or not isinstance(reply.get("name"), str):
                failures.append(str(reply.get("error", resp.status)))
                return
            agent.name = reply["name"]

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(one(a) for a in agents)), self.opts.timeout)
        took = time.monotonic() - started
        if failures:
            raise RuntimeError(f"{len(failures)} enrolments failed, e.g. {failures[0]}")
        self.report.stage("enrol", "ok", f"{len(agents)} agents", took)
        self._figure("enrol_per_s", "setup", "enrolments per second", "/s", len(agents) / took)

    async def _connect(self, token: EnrolmentToken, agents: list[SimAgent]
                       ) -> list[asyncio.Task[None]]:
        urls = list(token.urls)
        loop = asyncio.get_running_loop()
        tasks = []
        started = time.monotonic()
        for agent in agents:
            first = agent.index % len(urls)
            agent.client = ControlClient(urls[first:] + urls[:first], token.pin, agent.name,
                                         agent.key, agent)
            tasks.append(loop.create_task(agent.client.run()))
        waited = asyncio.gather(*(a.welcomed.wait() for a in agents))
        try:
            await asyncio.wait_for(waited, self.opts.timeout)
        except TimeoutError:
            pass
        took = time.monotonic() - started
        connected = sum(a.welcomed.is_set() for a in agents)
        self.report.stage("connect", "ok" if connected == len(agents) else "failed",
                          f"{connected} of {len(agents)} welcomed", took)
        self._figure("connect_per_s", "setup", "control connections per second", "/s",
                     connected / took)
        self._figure("agents_connected", "setup", "agents connected", "agents", connected)
        return tasks

    async def _introduce(self, http: aiohttp.ClientSession, agents: list[SimAgent]) -> None:
        sem = asyncio.Semaphore(CONCURRENCY)
        urls = [n.url for n in self.nodes]
        latencies: list[float] = []

        async def state(agent: SimAgent, peer: SimAgent) -> float:
            """Post agent's intent for peer; the monotonic time the request went out."""
            st = IntentStatement.new("add", agent.name, peer.name, int(time.time()))
            async with sem:
                url = urls[agent.index % len(urls)] + INTENTS_PATH
                sent = time.monotonic()
                async with http.post(url, json=encode_signed(st, agent.key)) as resp:
                    if resp.status >= 400:
                        raise RuntimeError(f"intent refused: HTTP {resp.status} "
                                           f"{(await resp.text())[:200]}")
            return sent

        async def until_introduced(a: SimAgent, b: SimAgent) -> None:
            while b.name not in a.intros or a.name not in b.intros:
                a.intro_seen.clear()
                b.intro_seen.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(a.intro_seen.wait(),
                                                          b.intro_seen.wait()), 1.0)

        async def pair(a: SimAgent, b: SimAgent) -> None:
            sent = await state(b, a)
            await until_introduced(a, b)
            latencies.append(max(a.intros[b.name], b.intros[a.name]) - sent)

        pairs = [(agents[i], agents[i + 1]) for i in range(0, len(agents), 2)]
        started = time.monotonic()
        try:
            # every pair's first intent, then (the platform settled) every pair's second,
            # each timed from the moment its request goes out
            await asyncio.wait_for(asyncio.gather(*(state(a, b) for a, b in pairs)),
                                   self.opts.timeout)
            await asyncio.sleep(1.0)
            await asyncio.wait_for(asyncio.gather(*(pair(a, b) for a, b in pairs)),
                                   self.opts.timeout)
            status = "ok"
        except TimeoutError:
            status = "failed"
        self.report.stage("introduce", status, f"{len(latencies)} of {len(pairs)} pairs "
                          "introduced", time.monotonic() - started)
        for q, key in ((0.5, "intro_p50_ms"), (0.99, "intro_p99_ms")):
            value = percentile(latencies, q)
            self._figure(key, "latency", f"introduction latency p{int(q * 100)}", "ms",
                         None if value is None else value * 1000, False,
                         "second intent sent -> both sides hold the introduction")

    async def _failover(self, agents: list[SimAgent]) -> None:
        victim = self.nodes[0]
        host = victim.url.split("//", 1)[1]
        served = [a for a in agents if a.client is not None and host in a.client.ws_url
                  and a.welcomed.is_set()]
        before = {a.index: a.client.connects for a in served if a.client is not None}
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)
        killed = time.monotonic()

        def moved() -> int:
            return sum(1 for a in served if a.client is not None and a.welcomed.is_set()
                       and a.client.connects > before[a.index])

        while moved() < len(served) and time.monotonic() - killed < self.opts.timeout:
            await asyncio.sleep(0.05)
        took = time.monotonic() - killed
        done = moved()
        self.report.stage("failover", "ok" if done == len(served) else "failed",
                          f"{done} of {len(served)} agents of the killed node reconnected",
                          took)
        self._figure("reconnect_s", "setup", "all agents of a killed node reconnected", "s",
                     took if done == len(served) else None, False,
                     f"{len(served)} agents, SIGKILL -> welcomed by another node")


def run_platform_bench(opts: PlatformBenchOptions, progress: Progress | None = None) -> Report:
    """Run the whole bench; a Report (stages that could not run are marked so)."""
    opts.check()
    step = progress or (lambda _what: None)
    # thousands of simulated agents: only their warnings
    logging.getLogger("enclave.agent.control").setLevel(logging.WARNING)
    report = Report(meta={"bench": "platform", "agents": opts.agents, "nodes": opts.nodes,
                          "cpus": os.cpu_count(), "loadavg": os.getloadavg()[0]})
    _raise_file_limit()
    work = opts.workdir or Path(tempfile.mkdtemp(prefix="enclave-bench-platform-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = PlatformBench(opts, work, report)
    try:
        started = time.monotonic()
        try:
            token = bench.start_platform()
        except PostgresMissing as exc:
            report.stage("platform", "unavailable", str(exc))
            return report
        report.meta["store"] = bench.store
        report.stage("platform", "ok", f"{opts.nodes} node(s) on {bench.store}",
                     time.monotonic() - started)
        step("platform")
        asyncio.run(bench.load(token, step))
    except (RuntimeError, OSError, aiohttp.ClientError, ValueError) as exc:
        report.stage("load", "failed", str(exc)[:500])
    finally:
        bench.stop_platform()
        if opts.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return report
