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
               db_cpu_s_per_1k: the throwaway PostgreSQL's processes; load_cpu_s_per_1k,
               load_rss_mb: this process (the simulated agents), on the same cores
  failover     reconnect_s        node 1 killed -> every agent it served welcomed by another
               reconnect_attempts connection attempts per such agent until its welcome
               reintroduce_s      node 1 killed -> both sides of every pair of those agents
                                  hold an introduction sent after the kill
The store: --db URL; else with --nodes > 1 (or --store postgresql) a throwaway PostgreSQL
cluster (enclave.platform.pgcluster, when its binaries are installed); else SQLite.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import aiohttp

from enclave.bench.platform_agents import (
    AGENTS_PER_WORKER,
    CONCURRENCY,
    WorkerSpec,
    run_worker,
)
from enclave.bench.procstat import cpu_seconds, peak_rss_bytes
from enclave.bench.report import Figure, Report
from enclave.localport import free_port
from enclave.platform.admission import MAX_IN_FLIGHT
from enclave.platform.frontdoor import raise_file_limit
from enclave.platform.pgcluster import PostgresCluster, PostgresMissing

MAX_WORKERS = 8  # load generator processes at most
# each node's cap on unauthenticated connections in the bench: the simulated agents' idle
# keep-alive request connections (CONCURRENCY in all) plus the control channels a node admits
# at once (admission.MAX_IN_FLIGHT); more would finish their TLS handshake only to be told
# 503 (busy), a handshake spent for nothing
HANDSHAKES_IN_FLIGHT = CONCURRENCY + MAX_IN_FLIGHT
WORKER_GRACE = 30.0  # seconds a worker may take beyond a stage's --timeout to answer
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
class Node:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Worker:
    """A load generator process (platform_agents.run_worker) and its end of the pipe."""

    proc: BaseProcess
    conn: Connection


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of the values; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _enclave(*args: str) -> list[str]:
    return [sys.executable, "-m", "enclave", *args]


class PlatformBench:
    def __init__(self, opts: PlatformBenchOptions, work: Path, report: Report) -> None:
        self.opts = opts
        self.work = work
        self.report = report
        self.nodes: list[Node] = []
        self.workers: list[Worker] = []
        self.cluster: PostgresCluster | None = None
        self.env = {**os.environ, "ENCLAVE_PLATFORM_KEY_PASSPHRASE": secrets.token_hex(16),
                    # every simulated agent comes from 127.0.0.1: the per-address cap is the
                    # total one; handshakes in flight stay bounded (a reconnect storm of
                    # thousands would starve the established sessions' pongs)
                    "ENCLAVE_PLATFORM_MAX_PER_ADDRESS": str(HANDSHAKES_IN_FLIGHT),
                    "ENCLAVE_PLATFORM_MAX_UNAUTH": str(HANDSHAKES_IN_FLIGHT),
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
        port, relay = free_port(), free_port()
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

    def db_cpu(self) -> float | None:
        """CPU seconds of the throwaway PostgreSQL cluster so far (None: not ours)."""
        if self.cluster is None:
            return None
        try:
            postmaster = int((self.cluster.root / "data" / "postmaster.pid").read_text()
                             .split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return cpu_seconds(postmaster)

    # -- the load ------------------------------------------------------------------------------

    # -- the load (the simulated agents run in worker processes: platform_agents.py) ---------

    def _start_workers(self, token_text: str) -> None:
        n = self.opts.agents
        count = max(1, min(MAX_WORKERS, math.ceil(n / AGENTS_PER_WORKER)))
        per = math.ceil(n / count / 2) * 2  # pairs stay in one worker
        ctx = multiprocessing.get_context("spawn")
        urls = tuple(node.url for node in self.nodes)
        for lo in range(0, n, per):
            mine, theirs = ctx.Pipe()
            spec = WorkerSpec(token_text, urls, lo, min(n, lo + per), count, self.opts.timeout)
            proc = ctx.Process(target=run_worker, args=(theirs, spec), daemon=True)
            proc.start()
            theirs.close()
            self.workers.append(Worker(proc, mine))
        self._all(("ready-check",), wait_only=True)

    def _all(self, command: tuple[object, ...], *, wait_only: bool = False,
             timeout: float | None = None) -> list[tuple[Any, ...]]:
        """Send ``command`` to every worker (unless ``wait_only``: their first message) and
        collect their replies; RuntimeError for an error or a worker gone silent."""
        if not wait_only:
            for w in self.workers:
                w.conn.send(command)
        limit = time.monotonic() + (timeout or self.opts.timeout) + WORKER_GRACE
        replies = []
        for w in self.workers:
            if not w.conn.poll(max(0.0, limit - time.monotonic())):
                raise RuntimeError(f"a load worker did not answer {command[0]!r} in time")
            reply = w.conn.recv()
            if reply[0] == "error":
                raise RuntimeError(f"load worker: {reply[1]}")
            replies.append(tuple(reply[1:]))
        return replies

    def _stop_workers(self) -> None:
        for w in self.workers:
            with contextlib.suppress(OSError, ValueError):
                w.conn.send(("stop",))
        for w in self.workers:
            w.proc.join(timeout=15)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)
        self.workers = []

    def load(self, token_text: str, progress: Progress) -> None:
        n, k = self.opts.agents, self.opts.nodes
        self._start_workers(token_text)
        try:
            idle_cpu, idle_rss = self.resources()  # the started, idle nodes
            idle_db = self.db_cpu()
            idle_load = sum(float(r[0]) for r in self._all(("usage",)))
            self._enrol()
            progress("enrolled")
            self._connect()
            progress("connected")
            self._introduce()
            progress("introduced")
            cpu, rss = self.resources()
            per_k = 1000 / n
            self._figure("cpu_s_per_1k", "cpu", "platform CPU per 1,000 agents", "s",
                         (cpu - idle_cpu) * per_k, False,
                         f"all {k} node(s): enrol, connect, introduce")
            self._figure("rss_mb_per_1k", "memory", "platform peak RSS per 1,000 agents", "MB",
                         (rss - idle_rss) * per_k, False,
                         f"above the idle nodes' {idle_rss:.0f} MB")
            self._figure("rss_mb_total", "memory", "platform peak RSS, all nodes", "MB", rss,
                         False, f"sum over {k} node(s)")
            db = self.db_cpu()
            if db is not None and idle_db is not None:
                self._figure("db_cpu_s_per_1k", "cpu", "PostgreSQL CPU per 1,000 agents", "s",
                             (db - idle_db) * per_k, False, "the throwaway cluster's processes")
            usage = self._all(("usage",))
            self._figure("load_cpu_s_per_1k", "cpu", "load generator CPU per 1,000 agents", "s",
                         (sum(float(r[0]) for r in usage) - idle_load) * per_k, False,
                         f"the simulated agents ({len(self.workers)} worker process(es))")
            self._figure("load_rss_mb", "memory", "load generator peak RSS", "MB",
                         sum(float(r[1]) for r in usage) / 1e6, False,
                         "sum over the worker processes")
            self._figure("busy_retries", "setup", "requests refused as busy (503) and resent",
                         "requests", sum(int(r[2]) for r in usage), False,
                         "enrolments and intents, after the node's Retry-After")
            if k > 1 and self.opts.failover:
                self._failover()
            else:
                self.report.stage("failover", "skipped", "one node" if k == 1 else
                                  "--no-failover")
            progress("failover")
        finally:
            self._stop_workers()

    def _figure(self, key: str, group: str, label: str, unit: str, value: float | None,
                higher: bool = True, note: str = "") -> None:
        self.report.figures.append(Figure(key, group, label, unit, None, value, None, higher,
                                          note))

    def _enrol(self) -> None:
        started = time.monotonic()
        replies = self._all(("enrol",))
        took = time.monotonic() - started
        failures = [f for r in replies for f in r[1]]
        if failures:
            raise RuntimeError(f"enrolments failed, e.g. {failures[0]}")
        done = sum(int(r[0]) for r in replies)
        self.report.stage("enrol", "ok", f"{done} agents", took)
        self._figure("enrol_per_s", "setup", "enrolments per second", "/s", done / took)

    def _connect(self) -> None:
        started = time.monotonic()
        connected = sum(int(r[0]) for r in self._all(("connect",)))
        took = time.monotonic() - started
        n = self.opts.agents
        self.report.stage("connect", "ok" if connected == n else "failed",
                          f"{connected} of {n} welcomed", took)
        self._figure("connect_per_s", "setup", "control connections per second", "/s",
                     connected / took)
        self._figure("agents_connected", "setup", "agents connected", "agents", connected)

    def _introduce(self) -> None:
        started = time.monotonic()
        latencies: list[float] = []
        status = "ok"
        try:
            # every pair's first intent, then (the platform settled) every pair's second,
            # each timed from the moment its request goes out
            self._all(("first",))
            time.sleep(1.0)
            for got, in_time in self._all(("second",)):
                latencies += list(got)
                if not in_time:
                    status = "failed"
        except RuntimeError:
            status = "failed"
        pairs = self.opts.agents // 2
        self.report.stage("introduce", status, f"{len(latencies)} of {pairs} pairs "
                          "introduced", time.monotonic() - started)
        for q, key in ((0.5, "intro_p50_ms"), (0.99, "intro_p99_ms")):
            value = percentile(latencies, q)
            self._figure(key, "latency", f"introduction latency p{int(q * 100)}", "ms",
                         None if value is None else value * 1000, False,
                         "second intent sent -> both sides hold the introduction")

    def _failover(self) -> None:
        victim = self.nodes[0]
        host = victim.url.split("//", 1)[1]
        served = sum(int(r[0]) for r in self._all(("arm", host)))
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)
        killed = time.monotonic()
        replies = self._all(("moved", killed, self.opts.timeout))
        done = sum(int(r[0]) for r in replies)
        took = max((float(r[1]) for r in replies), default=0.0)
        tries, most = sum(int(r[2]) for r in replies), max(int(r[3]) for r in replies)
        again = [r[4] for r in replies]
        self.report.stage("failover", "ok" if done == served else "failed",
                          f"{done} of {served} agents of the killed node reconnected", took)
        self._figure("reconnect_s", "setup", "all agents of a killed node reconnected", "s",
                     took if done == served else None, False,
                     f"{served} agents, SIGKILL -> welcomed by another node")
        self._figure("reconnect_attempts", "setup", "connection attempts per agent, failover",
                     "attempts", tries / served if served else None, False,
                     f"at most {most} by one agent (1: welcomed at the first try)")
        self._figure("reintroduce_s", "setup", "their pairs introduced again", "s",
                     max(float(a) for a in again) if None not in again else None, False,
                     "SIGKILL -> both sides of every pair of those agents hold a new "
                     "introduction")


def run_platform_bench(opts: PlatformBenchOptions, progress: Progress | None = None) -> Report:
    """Run the whole bench; a Report (stages that could not run are marked so)."""
    opts.check()
    step = progress or (lambda _what: None)
    # thousands of simulated agents: only their warnings
    logging.getLogger("enclave.agent.control").setLevel(logging.WARNING)
    report = Report(meta={"bench": "platform", "agents": opts.agents, "nodes": opts.nodes,
                          "cpus": os.cpu_count(), "loadavg": os.getloadavg()[0]})
    raise_file_limit()
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
        bench.load(token, step)
    except (RuntimeError, OSError, aiohttp.ClientError, ValueError) as exc:
        report.stage("load", "failed", str(exc)[:500])
    finally:
        bench.stop_platform()
        if opts.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return report
