"""Findings of the 1eeaf5c audit, against a real platform process on loopback.

Systems are enrolled with the real CLI (the token from a file and from standard input, never in
argv); their control sessions are the agent's own ControlClient, driven from this test, so a
test can report what a hostile agent would:

  - a hostname (and other non-address) candidate is dropped by the platform: peers never see it
  - candidate reports are rate limited per system: a burst of reports is not a burst of
    introductions, and the newest report still arrives
  - a handler that raises does not end ControlClient.run: it logs and reconnects
  - POST /v1/intents answers an unknown name exactly as a known name with a bad signature
  - a stranger's huge hello name is logged cut short, and repeated failures are rate limited
  - a pair withdrawn as "offline" (a hint: sessions stay up) that then loses its intent while
    one side is still offline: the online side is told "intent", so its session ends
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from enclave.agent.control import ControlClient
from enclave.agent.state import StateDir
from enclave.cert.keys import generate_private_key
from enclave.logsafe import BURST
from enclave.policy.intent import IntentStatement, encode_signed
from tests.support.control_client import Recorder, client, until
from tests.support.platform import Platform
from tests.support.proc import enclave, local_run


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with Platform.loopback(tmp_path_factory.mktemp("hard")) as p:
        yield p


def _enrol(plat: Platform, state: Path, *, stdin: bool) -> str:
    token = plat.token()
    if stdin:
        res = local_run(enclave("enrol", "--token-file", "-", "--state", str(state)),
                        input=token + "\n")
    else:
        path = state.parent / f"{state.name}.token"
        path.write_text(token + "\n")
        path.chmod(0o600)
        res = local_run(enclave("enrol", "--token-file", str(path), "--state", str(state)))
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@pytest.fixture(scope="module")
def systems(plat: Platform, tmp_path_factory: pytest.TempPathFactory) -> list[StateDir]:
    tmp = tmp_path_factory.mktemp("sys")
    out = []
    for i in range(3):
        _enrol(plat, tmp / f"s{i}", stdin=i % 2 == 0)
        out.append(StateDir(tmp / f"s{i}"))
    x, y = out[0], out[1]
    for a, b in ((x, y), (y, x)):
        res = local_run(enclave("intent", "add", b.load_enrolment().name, "--state", str(a.root)))
        assert res.returncode == 0, res.stderr
    return out


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


def _cand(host: str, port: int, **kw: str) -> dict[str, Any]:
    return {"transport": "udp", "host": host, "port": port, "kind": "public", "nat": "none", **kw}


@asynccontextmanager
async def _introduced(x: StateDir, y: StateDir) -> AsyncIterator[tuple[ControlClient, Recorder]]:
    """x's and y's control clients running, both connected and y introduced to x: yields x's
    client and y's recorder; both clients are stopped afterwards."""
    xname = x.load_enrolment().name
    hx, hy = Recorder(), Recorder()
    cx, cy = client(x, hx), client(y, hy)
    tasks = [asyncio.create_task(c.run()) for c in (cx, cy)]
    try:
        await until(lambda: cx.state == "connected" and cy.state == "connected")
        await until(lambda: hy.intros(xname))
        yield cx, hy
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_token_file_and_stdin_enrol(systems: list[StateDir]) -> None:
    for s in systems:
        assert s.load_enrolment().state == "active"


def test_hostname_candidates_never_reach_peers(systems: list[StateDir]) -> None:
    x, y = systems[0], systems[1]
    xname = x.load_enrolment().name

    async def scenario() -> None:
        async with _introduced(x, y) as (cx, hy):
            assert cx.send({"type": "report", "nat": "none", "mappings": {}, "candidates": [
                _cand("evil.example", 51820), _cand("localhost", 51820),
                _cand("0.0.0.0", 51820), _cand("224.0.0.1", 51820), _cand("169.254.9.9", 51820),
                _cand("198.18.5.5", 51820, kind="relay"),
                _cand("198.18.5.5", 51820, transport="relay"),
                _cand("198.18.5.5", 51820)]})
            got = await until(lambda: [m for m in hy.intros(xname) if m["candidates"]])
            assert [(c["host"], c["port"], c["kind"]) for c in got[-1]["candidates"]] == [
                ("198.18.5.5", 51820, "public")]
            await asyncio.sleep(1.5)  # nothing else arrives later either
            assert "evil.example" not in json.dumps(hy.msgs)
            assert "localhost" not in json.dumps(hy.msgs)

    _run(scenario)


def test_candidate_reports_are_rate_limited(systems: list[StateDir]) -> None:
    x, y = systems[0], systems[1]
    xname = x.load_enrolment().name

    async def scenario() -> None:
        async with _introduced(x, y) as (cx, hy):
            await asyncio.sleep(0.5)
            before = len(hy.intros(xname))
            for port in range(40000, 40040):  # 40 changed reports at once
                cx.send({"type": "report", "nat": "none", "mappings": {},
                         "candidates": [_cand("198.18.5.5", port)]})
                await asyncio.sleep(0.01)
            last = await until(lambda: [m for m in hy.intros(xname)
                                         if m["candidates"]
                                         and m["candidates"][0]["port"] == 40039])
            assert last  # the newest report is not lost
            await asyncio.sleep(1.5)
            assert len(hy.intros(xname)) - before <= 4, len(hy.intros(xname)) - before

    _run(scenario)


def test_control_client_survives_a_handler_exception(systems: list[StateDir]) -> None:
    z = systems[2]

    async def scenario() -> None:
        h = Recorder()
        h.raise_on_connect = 2
        c = client(z, h)
        task = asyncio.create_task(c.run())
        try:
            await until(lambda: h.welcomes >= 3 or task.done(), timeout=20)
            assert not task.done(), task.exception()
            assert c.last_error is None or "RuntimeError" in c.last_error
            await until(lambda: c.state == "connected", timeout=10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    _run(scenario)


async def _post_intent(plat: Platform, signed: dict[str, Any]) -> tuple[int, bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    async with aiohttp.ClientSession() as http, http.post(
            plat.url + "/v1/intents", json=signed, ssl=ctx) as resp:
        return resp.status, await resp.read()


def test_intents_api_is_no_name_oracle(plat: Platform, systems: list[StateDir]) -> None:
    known = systems[2].load_enrolment().name
    wrong = generate_private_key()
    now = int(time.time())

    async def scenario() -> None:
        a = await _post_intent(plat, encode_signed(
            IntentStatement.new("add", known, "ZZZZZ", now), wrong))
        b = await _post_intent(plat, encode_signed(
            IntentStatement.new("add", "QQQQQ", "ZZZZZ", now), wrong))
        assert a == b, (a, b)
        assert a[0] == 401

    _run(scenario)


def test_stranger_names_are_logged_short_and_rate_limited(plat: Platform) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    marker = "X" * 20000
    tries = BURST + 10

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(tries):
                async with http.ws_connect(plat.url.replace("https", "wss") + "/v1/control",
                                           ssl=ctx) as ws:
                    await ws.receive_json(timeout=5)
                    await ws.send_json({"type": "hello", "name": marker,
                                        "signature": base64.b64encode(b"x" * 64).decode()})
                    async for _msg in ws:
                        pass

    _run(scenario)
    time.sleep(0.5)
    lines = [ln for ln in plat.log().splitlines() if "control: authentication failed" in ln]
    assert lines, plat.log()[-2000:]
    assert max(len(ln) for ln in plat.log().splitlines()) < 2000
    assert len(lines) <= BURST + 1, len(lines)


def test_intent_removed_while_offline_reaches_the_online_side(plat: Platform,
                                                              systems: list[StateDir]) -> None:
    x, y = systems[0], systems[1]
    xname, yname = x.load_enrolment().name, y.load_enrolment().name

    async def scenario() -> None:
        hx, hy = Recorder(), Recorder()
        cx, cy = client(x, hx), client(y, hy)
        tx, ty = asyncio.create_task(cx.run()), asyncio.create_task(cy.run())
        try:
            await until(lambda: hy.intros(xname), what="y introduced to x")
            tx.cancel()  # x loses its control channel
            await asyncio.gather(tx, return_exceptions=True)
            withdrawals = lambda: [m for m in hy.msgs if m.get("type") == "withdraw"]  # noqa: E731
            await until(lambda: [w for w in withdrawals() if w["reason"] == "offline"], 20,
                        what="offline hint")
            res = await asyncio.to_thread(local_run, enclave(
                "intent", "remove", yname, "--state", str(x.root)))
            assert res.returncode == 0, res.stderr
            await until(lambda: [w for w in withdrawals() if w["reason"] == "intent"], 10,
                        what="the real reason after the hint")
        finally:
            for t in (tx, ty):
                t.cancel()
            await asyncio.gather(tx, ty, return_exceptions=True)
            res = local_run(enclave("intent", "add", yname, "--state", str(x.root)))
            assert res.returncode == 0, res.stderr

    _run(scenario)
