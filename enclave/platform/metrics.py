"""The platform's Prometheus metrics (`enclave platform serve --metrics HOST:PORT`).

    PlatformMetrics (one per Platform; counting is always on, serving only with --metrics)
      enclave_platform_enrolments_total{result}       issued | pending | refused | error
                                                      (POST /v1/enrol, counted by enrol_middleware
                                                      from the reply's status: 201/202/4xx/5xx)
      enclave_platform_introductions_total{result}    introduced | no_certificate   (control hub)
      enclave_platform_withdrawals_total{reason}      offline | intent | revoked | ...  (hub)
      enclave_platform_store_seconds{op}              histogram around every public Store method
      enclave_platform_agents_connected               control-channel sessions, read at scrape
      enclave_platform_relay_forwarded_bytes_total    relay payload bytes forwarded
      enclave_platform_relay_forwarded_packets_total / _dropped_packets_total
      enclave_platform_relay_python_data_packets_total  DATA the relay handled in Python, not in
                                                      its native forwarder (~0 when all is well)
      enclave_platform_relay_batches_total{kind}      the UDP relay's batching: recvmmsg, sendmmsg,
                                                      gro_run_in, gso_run_out (native forwarder)
      enclave_platform_relay_drops_total{reason}      the dropped packets by reason: unknown,
                                                      expired, rate, send, ..., refused (RelayCore)
      enclave_platform_connections{state}             open API connections: unauthenticated |
                                                      authenticated | held (over the per-address
                                                      cap, waiting for a place of their address)
      enclave_platform_connections_refused_total{reason}  closed at accept, by the cap reached
      enclave_platform_connections_abandoned_total    left by their client while they waited in
                                                      the listen backlog or held (closed
                                                      unanswered)
      enclave_platform_requests_in_flight / _waiting  agent requests worked on / waiting for a
                                                      place (admission control)
      enclave_platform_requests_refused_total         answered 503 busy after their wait

served by enclave.promhttp.MetricsServer on the platform's event loop.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from enclave.cert.enrolment import PATH_ENROL

METRICS_ENV = "ENCLAVE_PLATFORM_METRICS"
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class RelayCounts(Protocol):
    """enclave.platform.relay.RelayServer's counters (native forwarder and RelayCore)."""

    @property
    def forwarded(self) -> int: ...
    @property
    def forwarded_bytes(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def python_data(self) -> int: ...
    def drops(self) -> dict[str, int]: ...
    def batches(self) -> dict[str, int]: ...


def enrolment_result(status: int) -> str:
    """The enrolments_total label for the HTTP status POST /v1/enrol answered with."""
    if status == 201:
        return "issued"
    if status == 202:
        return "pending"
    return "refused" if 400 <= status < 500 else "error"


@dataclass(frozen=True)
class FrontDoorCounts:
    """The front door's and admission control's figures at one moment (serve.py reads them
    from ConnectionLimits, the QueueingSites and Admission)."""

    unauthenticated: int = 0
    authenticated: int = 0
    held: int = 0  # over the per-address cap, waiting for a place of their address
    refused: Mapping[str, int] = field(default_factory=dict)  # reason -> connections
    abandoned: int = 0
    in_flight: int = 0
    waiting: int = 0
    busy: int = 0  # requests answered 503


class _Live(Collector):
    """Gauges and counters read from the running platform at each scrape."""

    def __init__(self) -> None:
        self.agents: Callable[[], int] = lambda: 0
        self.relay: Callable[[], RelayCounts | None] = lambda: None
        self.front_door: Callable[[], FrontDoorCounts] = FrontDoorCounts

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("enclave_platform_agents_connected",
                                "Agents with an open control channel.", value=self.agents())
        relay = self.relay()
        fams = (
            ("enclave_platform_relay_forwarded_bytes", "Payload bytes the relay forwarded.",
             0 if relay is None else relay.forwarded_bytes),
            ("enclave_platform_relay_forwarded_packets", "Packets the relay forwarded.",
             0 if relay is None else relay.forwarded),
            ("enclave_platform_relay_dropped_packets",
             "Packets the relay dropped (no registration, no partner, rate limit).",
             0 if relay is None else relay.dropped),
            ("enclave_platform_relay_python_data_packets",
             "DATA packets the relay handled in Python instead of its native forwarder.",
             0 if relay is None else relay.python_data),
        )
        for name, doc, value in fams:
            yield CounterMetricFamily(name, doc, value=value)
        drops = CounterMetricFamily("enclave_platform_relay_drops",
                                    "Packets the relay dropped, by reason.", labels=["reason"])
        for reason, n in sorted(({} if relay is None else relay.drops()).items()):
            drops.add_metric([reason], n)
        yield drops
        batches = CounterMetricFamily("enclave_platform_relay_batches",
                                      "The UDP relay's system calls and coalesced runs.",
                                      labels=["kind"])
        for kind, n in sorted(({} if relay is None else relay.batches()).items()):
            batches.add_metric([kind], n)
        yield batches
        yield from _front_door(self.front_door())


def _front_door(door: FrontDoorCounts) -> Iterator[Metric]:
    conns = GaugeMetricFamily("enclave_platform_connections", "Open API connections.",
                              labels=["state"])
    conns.add_metric(["unauthenticated"], door.unauthenticated)
    conns.add_metric(["authenticated"], door.authenticated)
    conns.add_metric(["held"], door.held)
    yield conns
    refused = CounterMetricFamily("enclave_platform_connections_refused",
                                  "API connections closed at accept, by the cap reached.",
                                  labels=["reason"])
    for reason, n in sorted(door.refused.items()):
        refused.add_metric([reason], n)
    yield refused
    yield CounterMetricFamily("enclave_platform_connections_abandoned",
                              "API connections their client left while they waited in the "
                              "listen backlog or held (closed unanswered).",
                              value=door.abandoned)
    yield GaugeMetricFamily("enclave_platform_requests_in_flight",
                            "Agent requests being worked on (admission control).",
                            value=door.in_flight)
    yield GaugeMetricFamily("enclave_platform_requests_waiting",
                            "Agent requests waiting for a place (admission control).",
                            value=door.waiting)
    yield CounterMetricFamily("enclave_platform_requests_refused",
                              "Agent requests answered 503 busy after their wait.",
                              value=door.busy)


class PlatformMetrics:
    """The platform's counters and its registry (nothing is served until serve --metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.enrolments = Counter("enclave_platform_enrolments", "Enrolment requests by result.",
                                  ["result"], registry=self.registry)
        self.introductions = Counter("enclave_platform_introductions",
                                     "Introductions of a pair by result.", ["result"],
                                     registry=self.registry)
        self.withdrawals = Counter("enclave_platform_withdrawals",
                                   "Withdrawn introductions of a pair by reason.", ["reason"],
                                   registry=self.registry)
        self.store_seconds = Histogram("enclave_platform_store_seconds",
                                       "Time spent in platform database calls.", ["op"],
                                       buckets=STORE_BUCKETS, registry=self.registry)
        self._live = _Live()
        self.registry.register(self._live)

    def watch(self, agents: Callable[[], int], relay: Callable[[], RelayCounts | None],
              front_door: Callable[[], FrontDoorCounts] | None = None) -> None:
        """Where the scrape reads connected agents, the relay's counters and the front
        door's."""
        self._live.agents = agents
        self._live.relay = relay
        if front_door is not None:
            self._live.front_door = front_door

    def time_store(self, store: object) -> None:
        """Wrap every public method of `store` (its class's, not inherited from object) so its
        duration (to the end of the await, for a coroutine) lands in store_seconds{op=<method>}."""
        for name, _function in inspect.getmembers(type(store), inspect.isfunction):
            if name.startswith("_"):
                continue
            setattr(store, name, self._timed(getattr(store, name), name))

    def _timed(self, method: Callable[..., Any], op: str) -> Callable[..., Any]:
        observe = self.store_seconds.labels(op).observe
        if inspect.iscoroutinefunction(method):
            @functools.wraps(method)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await method(*args, **kwargs)
                finally:
                    observe(time.perf_counter() - start)

            return timed_async

        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                observe(time.perf_counter() - start)

        return timed

    def enrol_middleware(self) -> Middleware:
        """aiohttp middleware counting POST /v1/enrol by the status it is answered with
        (install it outside the error middleware, which turns refusals into replies)."""

        @web.middleware
        async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path != PATH_ENROL or request.method != "POST":
                return await handler(request)
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                self.enrolments.labels(enrolment_result(exc.status)).inc()
                raise
            except Exception:
                self.enrolments.labels("error").inc()
                raise
            self.enrolments.labels(enrolment_result(response.status)).inc()
            return response

        return count
