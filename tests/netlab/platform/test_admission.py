"""Admission control against a real `enclave platform serve` on loopback, started with
ENCLAVE_PLATFORM_MAX_IN_FLIGHT=1: while one agent request is in flight (a control channel that
has its challenge and has not answered it), a request on an open connection is refused at once
with 503, a Retry-After header and a JSON error (intents, enrolment), changes nothing, and the
refusals are logged within a budget; a new connection (a client, the agent's ControlClient) is
not accepted until the node has room (accept_queue.py), and is served then. Established
sessions are never refused.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from enclave.agent.state import StateDir
from enclave.cert.enrolment import PATH_CA, PATH_ENROL
from enclave.discovery.channel import CONTROL_PATH, INTENTS_PATH
from enclave.platform.admission import BUSY, RETRY_AFTER
from enclave.policy.intent import IntentStatement, encode_signed
from tests.support.control_client import Recorder, client, until
from tests.support.platform import Platform
from tests.support.tls import unverified_client_context


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with Platform.loopback(tmp_path_factory.mktemp("admission"),
                           ENCLAVE_PLATFORM_MAX_IN_FLIGHT="1") as p:
        yield p


TLS = unverified_client_context()  # one context: a keep-alive connection is reused only for it


async def _post(http: aiohttp.ClientSession, url: str, body: object
                ) -> tuple[int, dict[str, str], Any]:
    async with http.post(url, json=body, ssl=TLS) as resp:
        text = await resp.text()
        return resp.status, dict(resp.headers), json.loads(text) if text else None


def test_busy_node_answers_503_with_retry_after(plat: Platform, tmp_path: Path) -> None:
    x, y = StateDir(tmp_path / "x"), StateDir(tmp_path / "y")
    xname, yname = plat.enrol(x.root), plat.enrol(y.root)
    key = x.keystore().load_ed25519()
    control = plat.url.replace("https://", "wss://") + CONTROL_PATH

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as holder:
            # a keep-alive connection opened while the node has room (a GET is not admitted)
            async with http.get(plat.url + PATH_CA, ssl=TLS) as got:
                assert got.status == 200
                await got.read()
            # one request in flight: a control channel waiting for our hello (on a connection
            # of its own: the first one stays idle in its pool)
            hold = await holder.ws_connect(control, ssl=unverified_client_context())
            challenge = await hold.receive_json(timeout=10)
            assert challenge["type"] == "challenge"
            # requests on the open connection: refused at once with 503
            signed = encode_signed(IntentStatement.new("add", xname, yname, 0), key)
            status, headers, body = await _post(http, plat.url + INTENTS_PATH, signed)
            assert status == 503 and headers["Retry-After"] == str(RETRY_AFTER)
            assert body == {"error": BUSY, "retry_after": RETRY_AFTER}
            status, headers, body = await _post(http, plat.url + PATH_ENROL, {"x": 1})
            assert status == 503 and "Retry-After" in headers

            # a new connection is not accepted while the node is full (it waits in the listen
            # backlog; no TLS handshake is spent on a 503), nor is the agent's own client
            hx = Recorder()
            cx = client(x, hx)
            task = asyncio.create_task(cx.run())
            async with aiohttp.ClientSession() as fresh:
                waiting = asyncio.create_task(fresh.get(plat.url + PATH_CA,
                                                        ssl=unverified_client_context()))
                try:
                    await asyncio.sleep(2.0)
                    assert not waiting.done() and hx.welcomes == 0
                    await hold.close()
                    resp = await asyncio.wait_for(waiting, 30)
                    assert resp.status == 200
                    resp.release()
                    await until(lambda: hx.welcomes == 1, timeout=30, what="x welcomed")
                    # an established session is not counted: the node has room for a request
                    signed = encode_signed(IntentStatement.new("add", xname, yname,
                                                               int(time.time())), key)
                    status, _headers, body = await _post(http, plat.url + INTENTS_PATH,
                                                         signed)
                    assert status == 200, body
                finally:
                    waiting.cancel()
                    task.cancel()
                    await asyncio.gather(task, waiting, return_exceptions=True)

    asyncio.run(asyncio.wait_for(scenario(), 90))
    # nothing the refused requests asked for was done: the one intent is the one admitted
    assert plat.count("SELECT COUNT(*) FROM intents") == 1
    log = plat.log()
    assert "refused, 1 requests in flight (limit 1" in log
    assert log.count("refused, ") <= 10  # within the log budget
