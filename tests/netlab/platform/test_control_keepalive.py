"""The control channel's keepalive: neither end drops the other for answering late.

A platform node busy with thousands of agents may answer a ping seconds late, and so may a busy
agent. Before, aiohttp's pong timeout (half the 5 s heartbeat, on both ends) closed such a
channel, and the reconnects added to the node's load (a collapse at 10,000 agents). Against a
real `enclave platform serve` on loopback, with the agent's own ControlClient:

  - the platform process stopped (SIGSTOP) for longer than the old 5 s heartbeat plus its 2.5 s
    pong timeout, and shorter than SILENCE_TIMEOUT: the agent's channel is not dropped (no
    second welcome), and the introduction stated after SIGCONT comes over it
  - the agent's event loop blocked as long: the platform does not drop the agent either
  - a server that never answers (a WebSocket that swallows pings): the Keepalive closes the
    channel once it has been silent for its timeout
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from enclave.agent.control import Keepalive
from enclave.agent.state import StateDir
from enclave.discovery.channel import PLATFORM_HEARTBEAT, SILENCE_TIMEOUT
from tests.support.control_client import Recorder, client, until
from tests.support.http_serve import start_on_loopback
from tests.support.platform import Platform
from tests.support.proc import enclave, local_run

OLD_HEARTBEAT = 5.0  # before: aiohttp's heartbeat on both ends, every 5 s of silence ...
OLD_PONG_TIMEOUT = OLD_HEARTBEAT / 2  # ... and the channel closed 2.5 s after an unanswered ping
STALL = OLD_HEARTBEAT + OLD_PONG_TIMEOUT + 1.5  # a ping went out and stayed unanswered too long
assert STALL < min(SILENCE_TIMEOUT, PLATFORM_HEARTBEAT)


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with Platform.loopback(tmp_path_factory.mktemp("keepalive")) as p:
        yield p


def _pair(plat: Platform, tmp: Path) -> tuple[StateDir, StateDir, str, str]:
    x, y = StateDir(tmp / "x"), StateDir(tmp / "y")
    return x, y, plat.enrol(x.root), plat.enrol(y.root)


async def _intents(x: StateDir, y: StateDir, xname: str, yname: str) -> None:
    for a, b in ((x, yname), (y, xname)):
        res = await asyncio.to_thread(local_run, enclave("intent", "add", b, "--state",
                                                         str(a.root)))
        assert res.returncode == 0, res.stderr


async def _stalled(plat: Platform, tmp: Path, stall: str) -> tuple[Recorder, Recorder]:
    """x and y connected; the platform (``stall`` = "platform") or this event loop ("agent")
    stalls for STALL seconds; then mutual intent: their recorders once both are introduced."""
    x, y, xname, yname = _pair(plat, tmp)
    hx, hy = Recorder(), Recorder()
    tasks = [asyncio.create_task(client(s, h).run()) for s, h in ((x, hx), (y, hy))]
    try:
        await until(lambda: hx.welcomes and hy.welcomes, what="both welcomed")
        assert plat.proc is not None
        if stall == "platform":
            os.kill(plat.proc.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(STALL)  # the agents ping meanwhile; no pong comes
            finally:
                os.kill(plat.proc.pid, signal.SIGCONT)
        else:
            time.sleep(STALL)  # the agent's loop blocked on purpose
        await _intents(x, y, xname, yname)
        await until(lambda: hx.intros(yname) and hy.intros(xname), timeout=30,
                    what="x and y introduced after the stall")
        return hx, hy
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_a_stalled_platform_keeps_its_agents(plat: Platform, tmp_path: Path) -> None:
    hx, hy = asyncio.run(_stalled(plat, tmp_path, "platform"))
    assert (hx.welcomes, hy.welcomes) == (1, 1)  # one channel each, never re-established


def test_a_stalled_agent_is_not_dropped_by_the_platform(plat: Platform, tmp_path: Path) -> None:
    hx, hy = asyncio.run(_stalled(plat, tmp_path, "agent"))
    assert (hx.welcomes, hy.welcomes) == (1, 1)


async def _silent_server() -> tuple[web.AppRunner, str]:
    """A WebSocket server on loopback that reads everything and answers nothing (no pongs)."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        async for _msg in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner, port = await start_on_loopback(app)
    return runner, f"http://127.0.0.1:{port}/"


def test_keepalive_gives_up_on_a_silent_platform() -> None:
    async def scenario() -> tuple[bool, bool, int]:
        runner, url = await _silent_server()
        pings = 0
        try:
            async with aiohttp.ClientSession() as http, http.ws_connect(
                    url, autoping=False, heartbeat=None) as ws:
                keepalive = Keepalive(ws, interval=0.1, timeout=0.6)
                original = ws.ping

                async def counted(message: bytes = b"") -> None:
                    nonlocal pings
                    pings += 1
                    await original(message)

                ws.ping = counted  # type: ignore[method-assign]
                await asyncio.wait_for(keepalive.run(), 30)
                return keepalive.silent, ws.closed, pings
        finally:
            await runner.cleanup()

    silent, closed, pings = asyncio.run(scenario())
    assert silent and closed
    assert pings >= 2  # it asked (more than once) before giving up


async def _late_server(delay: float) -> tuple[web.AppRunner, str, list[float]]:
    """A WebSocket server on loopback that answers each ping ``delay`` seconds late; the list
    fills with the time of each pong it sent."""
    pongs: list[float] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)

        async def late(data: bytes) -> None:
            await asyncio.sleep(delay)
            await ws.pong(data)
            pongs.append(time.monotonic())

        answering = set()
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.PING:
                task = asyncio.create_task(late(msg.data))
                answering.add(task)
                task.add_done_callback(answering.discard)
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner, port = await start_on_loopback(app)
    return runner, f"http://127.0.0.1:{port}/", pongs


def test_keepalive_keeps_a_channel_whose_pongs_come_late() -> None:
    """Pongs 4 ping intervals late (aiohttp's rule, half an interval, would close it) and well
    within the timeout: the channel stays open while several of them arrive."""

    async def scenario() -> tuple[bool, bool, int]:
        runner, url, pongs = await _late_server(delay=0.8)
        try:
            async with aiohttp.ClientSession() as http, http.ws_connect(
                    url, autoping=False, heartbeat=None) as ws:
                keepalive = Keepalive(ws, interval=0.2, timeout=4.0)
                watch = asyncio.create_task(keepalive.run())
                async for msg in ws:  # as ControlClient._messages: every frame is heard
                    keepalive.heard()
                    if msg.type == aiohttp.WSMsgType.PONG and len(pongs) >= 4:
                        break
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
                return keepalive.silent, ws.closed, len(pongs)
        finally:
            await runner.cleanup()

    silent, closed, answered = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert not silent and not closed and answered >= 4
