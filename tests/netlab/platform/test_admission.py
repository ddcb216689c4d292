"""Admission control against a real `enclave platform serve` on loopback, started with
ENCLAVE_PLATFORM_MAX_IN_FLIGHT=1: while one agent request is in flight (a control channel that
has its challenge and has not answered it), the node refuses the next at once with 503, a
Retry-After header and a JSON error (intents, enrolment, another control channel), changes
nothing, and logs the refusals within a budget; the agent's ControlClient refused so waits for
the Retry-After and is welcomed once the node has room. Established sessions and the admin API
are never refused.
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
from enclave.cert.enrolment import PATH_ENROL
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


async def _post(http: aiohttp.ClientSession, url: str, body: object
                ) -> tuple[int, dict[str, str], Any]:
    async with http.post(url, json=body, ssl=unverified_client_context()) as resp:
        text = await resp.text()
        return resp.status, dict(resp.headers), json.loads(text) if text else None


def test_busy_node_answers_503_with_retry_after(plat: Platform, tmp_path: Path) -> None:
    x, y = StateDir(tmp_path / "x"), StateDir(tmp_path / "y")
    xname, yname = plat.enrol(x.root), plat.enrol(y.root)
    key = x.keystore().load_ed25519()
    control = plat.url.replace("https://", "wss://") + CONTROL_PATH

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            # one request in flight: a control channel waiting for our hello
            hold = await http.ws_connect(control, ssl=unverified_client_context())
            challenge = await hold.receive_json(timeout=10)
            assert challenge["type"] == "challenge"
            signed = encode_signed(IntentStatement.new("add", xname, yname, 0), key)
            status, headers, body = await _post(http, plat.url + INTENTS_PATH, signed)
            assert status == 503 and headers["Retry-After"] == str(RETRY_AFTER)
            assert body == {"error": BUSY, "retry_after": RETRY_AFTER}
            status, headers, body = await _post(http, plat.url + PATH_ENROL, {"x": 1})
            assert status == 503 and "Retry-After" in headers
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(control, ssl=unverified_client_context())
            assert refused.value.status == 503
            assert refused.value.headers is not None
            assert refused.value.headers["Retry-After"] == str(RETRY_AFTER)

            # the agent's own client is refused too, and waits; it gets in once there is room
            hx = Recorder()
            cx = client(x, hx)
            task = asyncio.create_task(cx.run())
            try:
                await until(lambda: cx.last_error is not None and "busy" in cx.last_error,
                            what="x refused as busy")
                assert hx.welcomes == 0
                await hold.close()
                await until(lambda: hx.welcomes == 1, timeout=30, what="x welcomed")
                # an established session is not counted: the node has room for a request
                signed = encode_signed(IntentStatement.new("add", xname, yname,
                                                           int(time.time())), key)
                status, _headers, body = await _post(http, plat.url + INTENTS_PATH, signed)
                assert status == 200, body
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    asyncio.run(asyncio.wait_for(scenario(), 90))
    # nothing the refused requests asked for was done: the one intent is the one admitted
    assert plat.count("SELECT COUNT(*) FROM intents") == 1
    log = plat.log()
    assert "refused, 1 requests in flight (limit 1" in log
    assert log.count("refused, ") <= 10  # within the log budget
