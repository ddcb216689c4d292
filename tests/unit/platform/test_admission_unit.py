"""Pure parts of admission control and of the agent's answer to it: the in-flight count and
its limit, and the jittered wait after a 503 with Retry-After."""

from __future__ import annotations

import asyncio
import random

import pytest

from enclave.agent.control import MAX_RETRY_AFTER, retry_after_delay
from enclave.platform.admission import MAX_IN_FLIGHT, Admission, max_in_flight_from_env


def test_admission_counts_up_to_its_limit() -> None:
    async def scenario() -> None:
        a = Admission(limit=2)
        assert await a.enter(wait=0) and await a.enter(wait=0)
        assert not await a.enter(wait=0) and a.refused == 1 and a.in_flight == 2
        a.leave()
        assert await a.enter(wait=0) and a.in_flight == 2
        for _ in range(5):
            a.leave()
        assert a.in_flight == 0  # never below zero

    asyncio.run(scenario())


def test_a_place_handed_to_a_request_that_just_went_away_is_passed_on() -> None:
    async def scenario() -> None:
        a = Admission(limit=1)
        assert await a.enter()
        late = asyncio.create_task(a.enter(wait=30))
        await asyncio.sleep(0)
        a.leave()  # the place goes to `late`...
        late.cancel()  # ...whose client goes away before it runs
        await asyncio.gather(late, return_exceptions=True)
        assert a.in_flight == 0 and a.has_room()  # not lost with it

    asyncio.run(scenario())


def test_a_waiting_request_gets_the_next_place_in_arrival_order() -> None:
    async def scenario() -> None:
        a = Admission(limit=1)
        assert await a.enter() and not a.has_room()
        first = asyncio.create_task(a.enter(wait=30))
        second = asyncio.create_task(a.enter(wait=30))
        await asyncio.sleep(0)
        assert not first.done() and not second.done()
        a.leave()  # the place goes to the first waiting request, not back to the pool
        assert await first and a.in_flight == 1 and not second.done()
        a.leave()
        assert await second and a.in_flight == 1
        a.leave()
        assert a.in_flight == 0 and a.has_room() and a.refused == 0

    asyncio.run(scenario())


def test_a_request_that_waits_in_vain_is_refused() -> None:
    async def scenario() -> None:
        a = Admission(limit=1)
        woken: list[int] = []
        a.on_room.append(lambda: woken.append(1))
        assert await a.enter()
        assert not await a.enter(wait=0.05)
        assert a.refused == 1 and a.in_flight == 1 and not a.has_room()
        gone = asyncio.create_task(a.enter(wait=30))
        await asyncio.sleep(0)
        gone.cancel()  # its client went away while it waited
        await asyncio.gather(gone, return_exceptions=True)
        a.leave()  # nobody left waiting: the place is free, and the front door is told
        assert a.in_flight == 0 and a.has_room() and woken == [1]

    asyncio.run(scenario())


@pytest.mark.parametrize("raw, want", [("", MAX_IN_FLIGHT), ("8", 8), ("0", 1),
                                       ("x", MAX_IN_FLIGHT)])
def test_limit_from_env(monkeypatch: pytest.MonkeyPatch, raw: str, want: int) -> None:
    monkeypatch.setenv("ENCLAVE_PLATFORM_MAX_IN_FLIGHT", raw)
    assert max_in_flight_from_env() == want


def test_retry_after_spreads_the_agents_a_busy_node_turned_away() -> None:
    rng = random.Random(5)
    delays = [retry_after_delay({"Retry-After": "2"}, rng) for _ in range(10_000)]
    assert all(2.0 <= d <= 4.0 for d in delays)
    # spread over the whole window, not bunched at its start
    buckets = {min(9, int((d - 2.0) / 2.0 * 10)) for d in delays}
    assert buckets == set(range(10))


@pytest.mark.parametrize("headers, low, high", [
    (None, 1, 2), ({}, 1, 2), ({"Retry-After": "soon"}, 1, 2), ({"Retry-After": "0"}, 1, 2),
    ({"Retry-After": "-3"}, 1, 2), ({"Retry-After": "99999"}, MAX_RETRY_AFTER, 2 * MAX_RETRY_AFTER),
])
def test_retry_after_bad_or_huge_values(headers: dict[str, str] | None, low: float,
                                        high: float) -> None:
    rng = random.Random(3)
    assert all(low <= retry_after_delay(headers, rng) <= high for _ in range(200))
