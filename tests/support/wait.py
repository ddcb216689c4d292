"""Polling until a condition holds: the one ``wait_for`` of the test suite (and its async twin).

    value = wait_for(lambda: agent.status()["ready_at"], timeout=15, what="ready_at")
    await wait_for_async(lambda: connected(a, b), 5, what="a <-> b connected")

Both return the predicate's first truthy value, and raise AssertionError naming ``what`` (and
the last value seen) when ``timeout`` seconds pass without one.  The async twin sleeps on the
running event loop, for predicates that need that loop to make progress (asyncio peers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _timed_out(what: str, timeout: float, last: object) -> AssertionError:
    return AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_for(pred: Callable[[], T], timeout: float = 10.0, *, what: str = "condition",
             interval: float = 0.05) -> T:
    """Call ``pred`` every ``interval`` s until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        time.sleep(interval)


async def wait_for_async(pred: Callable[[], T], timeout: float = 10.0, *,
                         what: str = "condition", interval: float = 0.02) -> T:
    """``wait_for`` that sleeps with ``asyncio.sleep`` (the loop keeps running meanwhile)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = pred()
        if last:
            return last
        if loop.time() >= deadline:
            raise _timed_out(what, timeout, last)
        await asyncio.sleep(interval)
