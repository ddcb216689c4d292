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

served by enclave.promhttp.MetricsServer on the platform's event loop.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator
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


class _Live(Collector):
    """Gauges and counters read from the running platform at each scrape."""

    def __init__(self) -> None:
        self.agents: Callable[[], int] = lambda: 0
        self.relay: Callable[[], RelayCounts | None] = lambda: None

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

    def watch(self, agents: Callable[[], int], relay: Callable[[], RelayCounts | None]) -> None:
        """Where the scrape reads connected agents and the relay's counters."""
        self._live.agents = agents
        self._live.relay = relay

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
