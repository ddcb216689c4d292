"""Admission control: a node works on a bounded number of agent requests at once; the rest wait
briefly for a place and are then refused with 503 and Retry-After, instead of queueing until
everything times out.

    agent --POST /v1/enrol, /v1/intents, GET /v1/control (until its welcome)--> node
        in flight < limit:  admitted (counted until the response, or the control channel's
                            welcome or refusal)
        otherwise:          waits up to WAIT seconds for a place (oldest first: leave() hands
                            its place on), else 503 {"error": "platform busy; retry later"},
                            Retry-After: RETRY_AFTER (the agent retries after that many seconds
                            with jitter; its other nodes may take it meanwhile)

A node that takes over the thousands of agents of a node that went away, or that is short of
CPU, would otherwise hold every request open while its database pool and event loop fall behind
(requests then failed after the pool's 30 s wait, and established sessions starved). A short
wait instead of an immediate 503 keeps the requests that arrive just as the limit is reached
(connections the front door accepted a moment before: accept_queue.py) from paying a Retry-After
of seconds for a place that frees in milliseconds. Requests already admitted, established
control channels, the admin API and metrics are never refused here. The front door
(frontdoor.py, accept_queue.py) bounds the connections themselves, before TLS.

The limit is a number of requests in progress, not of CPU: a request waits mostly on the
network (an agent's TLS handshake, its hello: round trips of tens of milliseconds over a WAN), so
the limit is what lets a node welcome hundreds of agents a second (enclave bench platform).

Setting (environment of `enclave platform serve`):
    ENCLAVE_PLATFORM_MAX_IN_FLIGHT   agent requests worked on at once (default 256, at least 1)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from enclave.cert.enrolment import PATH_ENROL, PATH_SYSTEM_CERT
from enclave.discovery.channel import INTENTS_PATH
from enclave.logsafe import RejectionLog
from enclave.platform.app import Handler

log = logging.getLogger("enclave.platform.admission")

MAX_IN_FLIGHT_ENV = "ENCLAVE_PLATFORM_MAX_IN_FLIGHT"
MAX_IN_FLIGHT = 256
RETRY_AFTER = 2  # seconds (the Retry-After header: whole seconds)
WAIT = 2.0  # seconds a request waits for a place before it is refused
BUSY = "platform busy; retry later"
ADMITTED_PATHS = frozenset({PATH_ENROL, PATH_SYSTEM_CERT, INTENTS_PATH})  # POSTs (middleware)


def _no_place(place: asyncio.Future[bool]) -> None:
    if not place.done():
        place.set_result(False)


def max_in_flight_from_env() -> int:
    """ENCLAVE_PLATFORM_MAX_IN_FLIGHT (default MAX_IN_FLIGHT, at least 1)."""
    raw = os.environ.get(MAX_IN_FLIGHT_ENV, "").strip()
    try:
        return max(1, int(raw)) if raw else MAX_IN_FLIGHT
    except ValueError:
        log.error("%s=%r is not a number; using %d", MAX_IN_FLIGHT_ENV, raw, MAX_IN_FLIGHT)
        return MAX_IN_FLIGHT


@dataclass
class Admission:
    """A count of the agent requests in flight, bounded by ``limit``."""

    limit: int = MAX_IN_FLIGHT
    in_flight: int = 0
    refused: int = 0
    rejections: RejectionLog = field(default_factory=lambda: RejectionLog(log))
    # called whenever a request leaves (accept_queue.py accepts new connections only while
    # there is room here: a TLS handshake that would end in 503 is not begun)
    on_room: list[Callable[[], None]] = field(default_factory=list)

    # requests waiting for a place, oldest first; leave() hands its place to the first
    _waiting: deque[asyncio.Future[bool]] = field(default_factory=deque)

    @property
    def waiting(self) -> int:
        """Requests waiting for a place now."""
        return len(self._waiting)

    def has_room(self) -> bool:
        return self.in_flight < self.limit and not self._waiting

    async def enter(self, wait: float = WAIT) -> bool:
        """A place now, or the first one that frees within ``wait`` seconds (in arrival
        order); False (counted as refused) when none did."""
        if self.has_room():
            self.in_flight += 1
            return True
        loop = asyncio.get_running_loop()
        place: asyncio.Future[bool] = loop.create_future()
        self._waiting.append(place)
        timer = loop.call_later(wait, _no_place, place)
        try:
            got = await place
        except asyncio.CancelledError:
            if place.done() and not place.cancelled() and place.result():
                self.leave()  # the place came just as the request went away: pass it on
            raise
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):
                self._waiting.remove(place)
        if not got:
            self.refused += 1
        return got

    def leave(self) -> None:
        """A request is done: its place goes to the oldest waiting request, else is free."""
        while self._waiting:
            place = self._waiting.popleft()
            if not place.done():
                place.set_result(True)  # the place changes hands: in_flight stays
                return
        self.in_flight = max(0, self.in_flight - 1)
        for wake in self.on_room:
            wake()

    def busy_response(self, request: web.Request) -> web.Response:
        """The refusal: 503, Retry-After, a JSON error; one log line within a budget."""
        self.rejections.note("busy", "%s %s: refused, %d requests in flight (limit %d; %d "
                             "refused so far)", request.method, request.path[:64],
                             self.in_flight, self.limit, self.refused)
        return web.json_response({"error": BUSY, "retry_after": RETRY_AFTER}, status=503,
                                 headers={"Retry-After": str(RETRY_AFTER)})


ADMISSION = web.AppKey("admission", Admission)


@web.middleware
async def admission_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """POSTs to ADMITTED_PATHS are admitted or refused with 503 (the control channel does its
    own admission, up to its welcome: routes_control.control)."""
    admission = request.app.get(ADMISSION)
    if admission is None or request.method != "POST" or request.path not in ADMITTED_PATHS:
        return await handler(request)
    if not await admission.enter():
        return admission.busy_response(request)
    try:
        return await handler(request)
    finally:
        admission.leave()

