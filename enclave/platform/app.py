"""The platform's shared state and request helpers, below every route module.

    serve.py                   build_app: one ``setup(app)`` per route module (ROUTES), HTTPS
      |                        until SIGTERM; modules use app.on_startup / app.on_cleanup for
      |                        background tasks
      +-- routes_pki.py        GET  /v1/ca, /v1/crl                          (public)
      +-- routes_enrol.py      POST /v1/enrol, /v1/system/certificate        (token / system key)
      +-- routes_admin.py      /v1/admin/...                                 (admin bearer token)
      +-- routes_control.py    /v1/control WebSocket, /v1/intents, /v1/admin/policies, discovery
      +-- relay.py             the UDP relay (started with the app)
            |  all import
            v
    app.py (this file)         Platform: one object per process (store, settings, CA authority,
                               clock), ``app[PLATFORM]``; error_middleware; read_json (bounded
                               nesting: parse_json) and str_field / str_list for
                               request bodies
"""

from __future__ import annotations

import datetime
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web

from enclave.platform.authority import Authority
from enclave.platform.errors import ApiError, StoreError
from enclave.platform.metrics import PlatformMetrics
from enclave.platform.nodefiles import materialise
from enclave.platform.paths import PlatformPaths, PlatformSettings
from enclave.platform.store import Store

log = logging.getLogger("enclave.platform")

MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32  # arrays/objects inside each other in a request body or control message


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class Platform:
    paths: PlatformPaths
    store: Store
    settings: PlatformSettings
    authority: Authority
    clock: Callable[[], datetime.datetime] = utcnow
    metrics: PlatformMetrics = field(default_factory=PlatformMetrics)

    def __post_init__(self) -> None:
        self.metrics.time_store(self.store)  # store_seconds{op}: every database call timed

    @classmethod
    async def open(cls, paths: PlatformPaths) -> Platform:
        store = await paths.open_store()
        try:
            await store.integrity_check()
            if paths.database is not None:  # another node's data directory: keys from the store
                await materialise(store, paths.root)
            settings = await PlatformSettings.load(store)
            authority = Authority.load(paths, settings.org, settings.overlay.prefixlen)
        except BaseException:
            await store.close()
            raise
        return cls(paths, store, settings, authority)

    async def close(self) -> None:
        await self.store.close()


PLATFORM = web.AppKey("platform", Platform)
# the (host, port) the API listens on (set by serve): the reflector and the relay bind to its
# host too, so several nodes can share a machine on different addresses
LISTEN = web.AppKey("listen", tuple[str, int])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        log.info("%s %s -> %d %s", request.method, request.path, exc.status, exc.message)
        return json_error(exc.status, exc.message)
    except (sqlite3.Error, StoreError) as exc:
        log.error("%s %s: database error: %s", request.method, request.path, exc)
        return json_error(503, "platform database error; nothing was changed or issued")


class JsonTooDeep(ValueError):
    """A JSON document that nests arrays/objects deeper than allowed."""


def parse_json(data: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> object:
    """JSON text from the network as Python objects; ValueError when it is not JSON,
    JsonTooDeep when arrays/objects nest deeper than `max_depth` (measured without recursion,
    and a document too deep for the decoder's own recursion is the same error)."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels") from None
    todo: list[tuple[object, int]] = [(value, 1)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, dict):
            children: Iterable[object] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels")
        todo.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return value


async def read_json(request: web.Request) -> dict[str, object]:
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "request body too large") from None
    return json_object(body)


def json_object(body: bytes) -> dict[str, object]:
    """A request body as a JSON object, or ApiError 400 (not JSON, too deep, not an object)."""
    try:
        data = parse_json(body)
    except JsonTooDeep as exc:
        raise ApiError(400, f"request body is not acceptable: {exc}") from None
    except ValueError:  # UnicodeDecodeError is one
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def str_field(body: dict[str, object], field: str) -> str:
    """A required string field of a JSON request body (400 if missing or another type)."""
    value = body.get(field)
    if not isinstance(value, str):
        raise ApiError(400, f"{field!r} must be a string")
    return value


def str_list(body: dict[str, object], field: str) -> list[str]:
    """A required list-of-strings field of a JSON request body (400 otherwise)."""
    value = body.get(field)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, f"{field!r} must be a list of strings")
    return value
