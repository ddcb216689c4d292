"""The simulated agents of `enclave bench platform`, in worker processes of their own.

    bench process (platform_load.py)            worker w (this module), agents lo..hi-1
      start K nodes, kill node 1                   own event loop, own CPU accounting
      --("enrol")----------------------------->    POST /v1/enrol for each agent
      --("connect")--------------------------->    the agent's own ControlClient each
      --("first") / ("second")---------------->    signed intents of pairs (2j, 2j+1)
      --("arm", host) / ("moved", t, timeout)->    agents on the killed node: reconnected?
      <--------------------------------- reply     one picklable tuple per command

One event loop holding thousands of TLS WebSockets falls behind under load, and its clients then
miss the 2.5 s a WebSocket pong may take (aiohttp closes them): the agents are spread over
worker processes (AGENTS_PER_WORKER each) and few handshakes run at once (CONNECTING), so the
load generator measures the platform rather than its own loop. A pair is always in one
worker (its ranges are even).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import resource
import ssl
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from enclave.agent.control import ControlClient, backoff_delay, retry_after_delay
from enclave.cert.ca import build_csr
from enclave.cert.enrolment import PATH_ENROL, EnrolmentToken, b64url
from enclave.cert.keys import Ed25519PrivateKey, generate_private_key
from enclave.discovery.channel import INTENTS_PATH
from enclave.platform.tls_buffers import shrink_tls_read_buffer
from enclave.policy.intent import IntentStatement, encode_signed

CONCURRENCY = 32  # HTTP requests (enrolments, intents) in flight at once, over all workers
CONNECTING = 32  # agents between starting their control channel and its welcome, over all
AGENTS_PER_WORKER = 1250
RETRIES = 6  # a request whose connection was closed or refused is sent again
BUSY_RETRIES = 30  # a request refused with 503 + Retry-After is sent again after it


@dataclass(frozen=True)
class WorkerSpec:
    token: str
    node_urls: tuple[str, ...]
    lo: int  # agents lo .. hi-1 (lo even)
    hi: int
    workers: int  # how many share CONCURRENCY and CONNECTING
    timeout: float


@dataclass
class SimAgent:
    """One simulated agent: its key, name, node, and when it learnt of each peer."""

    index: int
    key: Ed25519PrivateKey
    name: str = ""
    client: ControlClient | None = None
    welcomed: asyncio.Event = field(default_factory=asyncio.Event)
    intros: dict[str, float] = field(default_factory=dict)  # peer -> monotonic time
    latest: dict[str, float] = field(default_factory=dict)  # peer -> its newest introduction
    intro_seen: asyncio.Event = field(default_factory=asyncio.Event)

    def on_connected(self, welcome: dict[str, Any]) -> None:
        self.welcomed.set()

    def on_message(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == "introduce" and isinstance(msg.get("peer"), str):
            now = time.monotonic()
            self.intros.setdefault(str(msg["peer"]), now)
            self.latest[str(msg["peer"])] = now
            self.intro_seen.set()

    def on_disconnected(self) -> None:
        self.welcomed.clear()


def _client_ssl() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the ControlClient checks the pin; enrolment is measured
    return ctx


class Fleet:
    """The agents of one worker and what each stage does with them."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.token = EnrolmentToken.decode(spec.token)
        self.agents = [SimAgent(i, generate_private_key()) for i in range(spec.lo, spec.hi)]
        self.tasks: list[asyncio.Task[None]] = []
        self.http: aiohttp.ClientSession | None = None
        self.served: list[SimAgent] = []
        self.before: dict[int, int] = {}
        self.tries: dict[int, int] = {}  # agent -> its client's attempts when armed
        self.busy = 0  # requests a node refused with 503 + Retry-After (sent again)
        share = max(1, spec.workers)
        self.limit = max(1, CONCURRENCY // share)
        self.requests = asyncio.Semaphore(self.limit)
        self.connecting = asyncio.Semaphore(max(1, CONNECTING // share))

    async def open(self) -> None:
        conn = aiohttp.TCPConnector(ssl=_client_ssl(), limit=self.limit)
        self.http = aiohttp.ClientSession(connector=conn)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.close()

    async def _post(self, url: str, body: object) -> tuple[int, str]:
        """POST JSON; (status, text). A keep-alive connection the server closed just as it
        was reused is retried on a new one (RETRIES times); a 503 with Retry-After (the node
        is busy: nothing was done) is sent again after it, as an agent would (BUSY_RETRIES
        times; self.busy counts them)."""
        assert self.http is not None
        dropped = busy = 0
        while True:
            try:
                async with self.http.post(url, json=body) as resp:
                    text = await resp.text()
                    if (resp.status != HTTPStatus.SERVICE_UNAVAILABLE
                            or "Retry-After" not in resp.headers or busy == BUSY_RETRIES):
                        return resp.status, text
                    wait = retry_after_delay(resp.headers)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # includes a connection the node's front door closed at once (at its cap of
                # unauthenticated connections): sent again after the agent's backoff
                if dropped == RETRIES:
                    raise
                dropped += 1
                await asyncio.sleep(backoff_delay(dropped))
                continue
            busy += 1
            self.busy += 1
            await asyncio.sleep(wait)

    async def enrol(self) -> tuple[int, list[str]]:
        """(enrolled, failures)."""
        failures: list[str] = []
        urls = self.token.urls

        async def one(agent: SimAgent) -> None:
            csr = base64.b64encode(build_csr(agent.key)).decode()
            body = {"key_id": self.token.key_id, "secret": b64url(self.token.secret),
                    "csr": csr, "hostname": f"sim-{agent.index}"}
            async with self.requests:
                status, text = await self._post(urls[agent.index % len(urls)] + PATH_ENROL,
                                                body)
            reply = json.loads(text) if text.startswith("{") else {}
            if status >= 400 or not isinstance(reply.get("name"), str):
                failures.append(str(reply.get("error", status)))
                return
            agent.name = reply["name"]

        await asyncio.wait_for(asyncio.gather(*(one(a) for a in self.agents)),
                               self.spec.timeout)
        return sum(1 for a in self.agents if a.name), failures[:3]

    async def connect(self) -> int:
        """Start every agent's control channel (a ramp: at most CONNECTING waiting for their
        welcome at once); how many are welcomed."""
        urls = list(self.token.urls)
        loop = asyncio.get_running_loop()

        async def start(agent: SimAgent) -> None:
            first = agent.index % len(urls)
            agent.client = ControlClient(urls[first:] + urls[:first], self.token.pin,
                                         agent.name, agent.key, agent)
            async with self.connecting:
                self.tasks.append(loop.create_task(agent.client.run()))
                await agent.welcomed.wait()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(start(a) for a in self.agents)),
                                   self.spec.timeout)
        return sum(a.welcomed.is_set() for a in self.agents)

    async def _state(self, agent: SimAgent, peer: SimAgent) -> float:
        """Post agent's intent for peer; the monotonic time the request went out."""
        urls = self.spec.node_urls
        st = IntentStatement.new("add", agent.name, peer.name, int(time.time()))
        async with self.requests:
            url = urls[agent.index % len(urls)] + INTENTS_PATH
            sent = time.monotonic()
            status, text = await self._post(url, encode_signed(st, agent.key))
        if status >= 400:
            raise RuntimeError(f"intent refused: HTTP {status} {text[:200]}")
        return sent

    def _pairs(self) -> list[tuple[SimAgent, SimAgent]]:
        return [(self.agents[i], self.agents[i + 1]) for i in range(0, len(self.agents), 2)]

    async def first(self) -> None:
        """Every pair's first intent (agent 2j for 2j+1)."""
        await asyncio.wait_for(asyncio.gather(*(self._state(a, b) for a, b in self._pairs())),
                               self.spec.timeout)

    async def second(self) -> tuple[list[float], bool]:
        """Every pair's second intent, each timed until both hold the introduction:
        (latencies in seconds, all done in time)."""
        latencies: list[float] = []

        async def until_introduced(a: SimAgent, b: SimAgent) -> None:
            while b.name not in a.intros or a.name not in b.intros:
                waiting = a if b.name not in a.intros else b  # no await from check to clear
                waiting.intro_seen.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiting.intro_seen.wait(), 1.0)

        async def pair(a: SimAgent, b: SimAgent) -> None:
            sent = await self._state(b, a)
            await until_introduced(a, b)
            latencies.append(max(a.intros[b.name], b.intros[a.name]) - sent)

        try:
            await asyncio.wait_for(asyncio.gather(*(pair(a, b) for a, b in self._pairs())),
                                   self.spec.timeout)
            return latencies, True
        except TimeoutError:
            return latencies, False

    def arm(self, host: str) -> int:
        """Note the agents connected to ``host`` (about to be killed); how many."""
        self.served = [a for a in self.agents if a.client is not None
                       and host in a.client.ws_url and a.welcomed.is_set()]
        self.before = {a.index: a.client.connects for a in self.served if a.client is not None}
        self.tries = {a.index: a.client.attempts for a in self.served if a.client is not None}
        return len(self.served)

    def _moved(self) -> int:
        return sum(1 for a in self.served if a.client is not None and a.welcomed.is_set()
                   and a.client.connects > self.before[a.index])

    def _partner(self, agent: SimAgent) -> SimAgent:
        return self.agents[(agent.index ^ 1) - self.spec.lo]  # pairs (2j, 2j+1)

    def _reintroduced(self, killed: float) -> int:
        """Pairs of the noted agents in which both sides hold an introduction sent after
        ``killed`` (the pair's relay and candidates as the surviving node sees them)."""
        done = 0
        for a in self.served:
            b = self._partner(a)
            if a.latest.get(b.name, 0.0) > killed and b.latest.get(a.name, 0.0) > killed:
                done += 1
        return done

    async def moved(self, killed: float, timeout: float
                    ) -> tuple[int, float, int, int, float | None]:
        """Wait until every noted agent is welcomed by another node, then until every pair
        of theirs is introduced again: (how many were welcomed, monotonic seconds from
        ``killed`` to the last of them, or to giving up, connection attempts they made since,
        the most any one made, seconds from ``killed`` until every pair was introduced again
        or None if not within ``timeout``)."""
        while self._moved() < len(self.served) and time.monotonic() - killed < timeout:
            await asyncio.sleep(0.05)
        took = time.monotonic() - killed
        tries = [a.client.attempts - self.tries[a.index] for a in self.served
                 if a.client is not None]
        while (self._reintroduced(killed) < len(self.served)
               and time.monotonic() - killed < timeout):
            await asyncio.sleep(0.05)
        again = (time.monotonic() - killed if self._reintroduced(killed) == len(self.served)
                 else None)
        return (self._moved(), took, sum(tries), max(tries, default=0), again)


async def _serve(conn: Connection, spec: WorkerSpec) -> None:
    fleet = Fleet(spec)
    await fleet.open()
    loop = asyncio.get_running_loop()
    try:
        conn.send(("ready",))
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            kind = command[0]
            try:
                reply: tuple[Any, ...]
                if kind == "enrol":
                    reply = await fleet.enrol()
                elif kind == "connect":
                    reply = (await fleet.connect(),)
                elif kind == "first":
                    await fleet.first()
                    reply = ()
                elif kind == "second":
                    reply = await fleet.second()
                elif kind == "arm":
                    reply = (fleet.arm(command[1]),)
                elif kind == "moved":
                    reply = await fleet.moved(command[1], command[2])
                elif kind == "usage":
                    used = resource.getrusage(resource.RUSAGE_SELF)
                    reply = (used.ru_utime + used.ru_stime, used.ru_maxrss * 1024, fleet.busy)
                else:  # "stop"
                    conn.send(("ok",))
                    return
                conn.send(("ok", *reply))
            except (RuntimeError, OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"[:500]))
    finally:
        await fleet.close()


def run_worker(conn: Connection, spec: WorkerSpec) -> None:
    """A worker process's main: serve the bench's commands until "stop"."""
    logging.basicConfig(level=logging.ERROR)  # thousands of agents: errors only
    shrink_tls_read_buffer()  # thousands of client ends of TLS connections here
    with contextlib.suppress(KeyboardInterrupt, EOFError):
        asyncio.run(_serve(conn, spec))
