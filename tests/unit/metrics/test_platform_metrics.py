"""enclave.platform.metrics: enrolments by result (through the real middlewares on loopback),
database latency around a real Store, live relay/agent figures; all through the text format."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from enclave.cert.enrolment import PATH_ENROL
from enclave.platform.app import error_middleware
from enclave.platform.errors import ApiError
from enclave.platform.metrics import FrontDoorCounts, PlatformMetrics, enrolment_result
from enclave.platform.relay import RelayCore, RelayServer
from enclave.platform.store import Store
from tests.support.http_serve import start_on_loopback


def samples(metrics: PlatformMetrics) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for fam in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in fam.samples:
            out[(s.name, *(f"{k}={v}" for k, v in sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.parametrize(("status", "result"), [
    (201, "issued"), (202, "pending"), (400, "refused"), (401, "refused"), (403, "refused"),
    (413, "refused"), (500, "error"), (503, "error"),
])
def test_enrolment_result(status: int, result: str) -> None:
    assert enrolment_result(status) == result


def test_enrolments_are_counted_by_the_status_they_are_answered_with() -> None:
    metrics = PlatformMetrics()
    replies = iter([201, 202, 401, 201])

    async def enrol(_request: web.Request) -> web.Response:
        status = next(replies)
        if status >= 400:
            raise ApiError(status, "bad token")
        return web.json_response({}, status=status)

    async def other(_request: web.Request) -> web.Response:
        return web.json_response({}, status=201)

    async def main() -> None:
        app = web.Application(middlewares=[metrics.enrol_middleware(), error_middleware])
        app.router.add_post(PATH_ENROL, enrol)
        app.router.add_post("/v1/other", other)
        runner, port = await start_on_loopback(app)

        def post(path: str) -> int:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"{}",
                                         method="POST")
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return int(r.status)
            except urllib.error.HTTPError as e:
                return e.code

        try:
            got = [await asyncio.to_thread(post, PATH_ENROL) for _ in range(4)]
            assert got == [201, 202, 401, 201]
            assert await asyncio.to_thread(post, "/v1/other") == 201  # not an enrolment
        finally:
            await runner.cleanup()

    asyncio.run(main())
    m = samples(metrics)
    assert m[("enclave_platform_enrolments_total", "result=issued")] == 2
    assert m[("enclave_platform_enrolments_total", "result=pending")] == 1
    assert m[("enclave_platform_enrolments_total", "result=refused")] == 1


def test_every_public_store_call_is_timed(tmp_path: Path) -> None:
    metrics = PlatformMetrics()

    async def calls() -> None:
        store = await Store.open(tmp_path / "platform.db")
        try:
            metrics.time_store(store)
            await store.set_meta({"k": "v"})
            assert await store.get_meta("k") == "v"
            assert await store.get_meta("missing") is None
            assert await store.list_systems() == []
        finally:
            await store.close()

    asyncio.run(calls())
    m = samples(metrics)
    assert m[("enclave_platform_store_seconds_count", "op=get_meta")] == 2
    assert m[("enclave_platform_store_seconds_count", "op=set_meta")] == 1
    assert m[("enclave_platform_store_seconds_count", "op=list_systems")] == 1
    assert m[("enclave_platform_store_seconds_bucket", "le=+Inf", "op=get_meta")] == 2
    assert ("enclave_platform_store_seconds_count", "op=_tx") not in m


def test_live_figures_are_read_at_each_scrape() -> None:
    metrics = PlatformMetrics()
    m = samples(metrics)  # nothing watched yet: zeros, still valid exposition
    assert m[("enclave_platform_agents_connected",)] == 0
    assert m[("enclave_platform_relay_forwarded_bytes_total",)] == 0
    core = RelayCore(b"\x01" * 32)
    sessions = ["A", "B"]
    server = RelayServer(core)  # not started: RelayCore's counts only
    metrics.watch(lambda: len(sessions), lambda: server)
    core.forwarded, core.forwarded_bytes, core.dropped = 3, 4200, 1
    m = samples(metrics)
    assert m[("enclave_platform_agents_connected",)] == 2
    assert m[("enclave_platform_relay_forwarded_bytes_total",)] == 4200
    assert m[("enclave_platform_relay_forwarded_packets_total",)] == 3
    assert m[("enclave_platform_relay_dropped_packets_total",)] == 1
    assert m[("enclave_platform_relay_drops_total", "reason=refused")] == 1
    assert m[("enclave_platform_relay_drops_total", "reason=unknown")] == 0
    sessions.pop()
    assert samples(metrics)[("enclave_platform_agents_connected",)] == 1


def test_front_door_figures_are_read_at_each_scrape() -> None:
    metrics = PlatformMetrics()
    m = samples(metrics)  # nothing watched: zeros
    assert m[("enclave_platform_connections", "state=unauthenticated")] == 0
    assert m[("enclave_platform_connections_abandoned_total",)] == 0
    assert m[("enclave_platform_requests_in_flight",)] == 0
    door = [FrontDoorCounts(unauthenticated=7, authenticated=1200, held=9,
                            refused={"unauthenticated connections from one address": 3},
                            abandoned=41, in_flight=256, waiting=12, busy=5)]
    metrics.watch(lambda: 0, lambda: None, lambda: door[0])
    m = samples(metrics)
    assert m[("enclave_platform_connections", "state=unauthenticated")] == 7
    assert m[("enclave_platform_connections", "state=authenticated")] == 1200
    assert m[("enclave_platform_connections", "state=held")] == 9
    assert m[("enclave_platform_connections_refused_total",
              "reason=unauthenticated connections from one address")] == 3
    assert m[("enclave_platform_connections_abandoned_total",)] == 41
    assert m[("enclave_platform_requests_in_flight",)] == 256
    assert m[("enclave_platform_requests_waiting",)] == 12
    assert m[("enclave_platform_requests_refused_total",)] == 5
    door[0] = FrontDoorCounts(in_flight=3)
    assert samples(metrics)[("enclave_platform_requests_in_flight",)] == 3


def test_introductions_and_withdrawals_render_by_label() -> None:
    metrics = PlatformMetrics()
    metrics.introductions.labels("introduced").inc(2)
    metrics.withdrawals.labels("offline").inc()
    m = samples(metrics)
    assert m[("enclave_platform_introductions_total", "result=introduced")] == 2
    assert m[("enclave_platform_withdrawals_total", "reason=offline")] == 1
