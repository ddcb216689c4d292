"""Deeply nested JSON from strangers is a clear refusal, never a RecursionError.

Found by reading the fuzz targets' parsers (bench/fuzz) and the 1eeaf5c audit: ``json.loads``
raises RecursionError (not ValueError) on about a thousand nested arrays, which escaped
  - read_json (every HTTP API body: a 500 with a traceback per request),
  - the control WebSocket's hello and messages (the handler died with a traceback),
  - the enrolment token parser (``enclave enrol`` crashed),
  - the intent statement parser (POST /v1/intents, before any signature check: a 500).
"""

from __future__ import annotations

import asyncio
import base64

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from enclave.cert.enrolment import EnrolmentToken, TokenError, b64url
from enclave.platform.app import (
    MAX_JSON_DEPTH,
    JsonTooDeep,
    error_middleware,
    parse_json,
    read_json,
)
from enclave.policy.intent import IntentError, decode_signed

DEEP = b"[" * 100_000 + b"]" * 100_000  # a 200 KB document (far past the recursion limit)


def nested(depth: int) -> bytes:
    """`depth` arrays/objects inside each other, alternating, around one number."""
    opens = "".join('{"a":' if i % 2 else "[" for i in range(depth))
    closes = "".join("}" if i % 2 else "]" for i in reversed(range(depth)))
    return (opens + "1" + closes).encode()


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1100, 100_000])
def test_parse_json_refuses_deep_documents_with_a_value_error(depth: int) -> None:
    with pytest.raises(JsonTooDeep, match=f"deeper than {MAX_JSON_DEPTH}"):
        parse_json(nested(depth) if depth < 100_000 else DEEP)
    assert issubclass(JsonTooDeep, ValueError)  # what the WebSocket handlers catch


def test_parse_json_takes_documents_up_to_the_limit() -> None:
    got = parse_json(nested(MAX_JSON_DEPTH))
    for _ in range(MAX_JSON_DEPTH):
        got = got["a"] if isinstance(got, dict) else got[0]  # type: ignore[index]
    assert got == 1
    assert parse_json('{"x": [1, {"y": []}], "z": "[[[["}') == {"x": [1, {"y": []}], "z": "[[[["}
    with pytest.raises(ValueError):
        parse_json(b"[1,")


async def _post_bodies(bodies: list[bytes]) -> list[tuple[int, dict[str, object]]]:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await read_json(request))

    app = web.Application(middlewares=[error_middleware], client_max_size=1 << 20)
    app.router.add_post("/echo", echo)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        out = []
        async with ClientSession() as http:
            for body in bodies:
                async with http.post(server.make_url("/echo"), data=body) as resp:
                    out.append((resp.status, await resp.json()))
        return out
    finally:
        await server.close()


def test_read_json_answers_deep_nesting_with_400_over_http() -> None:
    in_object = [b'{"a":' + nested(d) + b"}" for d in (MAX_JSON_DEPTH, MAX_JSON_DEPTH - 1)]
    deep, too_deep, ok = asyncio.run(_post_bodies([DEEP, *in_object]))
    assert deep[0] == 400 and "nested deeper than 32 levels" in str(deep[1]["error"])
    assert too_deep[0] == 400 and "nested deeper" in str(too_deep[1]["error"])
    assert ok[0] == 200 and "a" in ok[1]


def test_enrolment_token_with_deep_json_is_a_token_error() -> None:
    with pytest.raises(TokenError, match="malformed"):
        EnrolmentToken.decode("enclave1-" + b64url(b"[" * 1400))


def test_intent_statement_with_deep_json_is_an_intent_error() -> None:
    signed = {"statement": base64.b64encode(b"[" * 1000).decode(), "signature": ""}
    with pytest.raises(IntentError, match="not JSON"):
        decode_signed(signed)
