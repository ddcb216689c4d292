"""A real platform process (loopback) refuses deeply nested JSON clearly, with no traceback.

Before the fix, ``json.loads`` raised RecursionError on deep documents: the control WebSocket's
hello handler died with a traceback in the platform log (for a stranger, unauthenticated), and
POST /v1/intents and POST /v1/enrol answered 500.  Now: the stranger's hello is an
authentication failure (close code 4401), the APIs answer 400.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator

import aiohttp
import pytest

from enclave.discovery.channel import CLOSE_AUTH_FAILED
from tests.support.platform import Platform
from tests.support.tls import unverified_client_context

DEEP = "[" * 100_000 + "]" * 100_000  # 200 KB: under the 256 KiB WebSocket message limit


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with Platform.loopback(tmp_path_factory.mktemp("deep")) as p:
        yield p


async def _hello(plat: Platform) -> tuple[object, int | None]:
    async with aiohttp.ClientSession() as http, http.ws_connect(
            plat.url.replace("https", "wss") + "/v1/control", ssl=unverified_client_context(),
            max_msg_size=1 << 20) as ws:
        await ws.receive_json(timeout=5)  # the challenge
        await ws.send_str(DEEP)
        reply = await ws.receive_json(timeout=5)
        async for _msg in ws:
            pass
        return reply, ws.close_code


async def _post(plat: Platform, path: str, body: bytes) -> int:
    async with aiohttp.ClientSession() as http, http.post(
            plat.url + path, data=body, ssl=unverified_client_context(),
            headers={"Content-Type": "application/json"}) as resp:
        return resp.status


def test_deep_hello_is_an_authentication_failure_without_traceback(plat: Platform) -> None:
    reply, code = asyncio.run(_hello(plat))
    assert reply == {"type": "error", "error": "authentication failed"}
    assert code == CLOSE_AUTH_FAILED
    log = plat.log()
    assert "RecursionError" not in log and "Traceback" not in log, log[-3000:]


def test_deep_bodies_get_400_not_500(plat: Platform) -> None:
    deep_statement = {"statement": base64.b64encode(b"[" * 1000).decode(), "signature": ""}
    bodies = {
        "/v1/intents": DEEP[:60_000].encode(),  # under the 64 KiB body limit, 30,000 deep
        "/v1/enrol": ("[" * 30_000).encode(),
    }
    for path, body in bodies.items():
        assert asyncio.run(_post(plat, path, body)) == 400, path
    assert asyncio.run(_post(plat, "/v1/intents", json.dumps(deep_statement).encode())) == 400
    assert "RecursionError" not in plat.log()
