"""Admin JSON API, behind the admin bearer token made at `platform init` (only its hash is kept).

    GET    /v1/admin/systems                       list
    POST   /v1/admin/systems/{name}/approve        pending -> active
    POST   /v1/admin/systems/{name}/disable        certificates put on hold (in the CRL)
    POST   /v1/admin/systems/{name}/enable         hold lifted
    POST   /v1/admin/systems/{name}/revoke         permanent; certificates revoked
    DELETE /v1/admin/systems/{name}                revoked and forgotten
    POST   /v1/admin/systems/{name}/tags           {"changes": ["+a", "-b"]}
    GET    /v1/admin/keys                          list enrolment keys (never secrets)
    POST   /v1/admin/keys                          {"uses": N|null, "expires": "24h"|null, "tags":
                                                    [...], "approval", "ephemeral",
                                                    "cert_lifetime": "30d"} -> {"token", "key"}
    POST   /v1/admin/keys/{id}/revoke
"""

from __future__ import annotations

import logging

from aiohttp import web

from enclave.platform.admin import (
    DEFAULT_CERT_LIFETIME,
    create_enrolment_key,
    parse_duration,
    parse_tag_changes,
)
from enclave.platform.app import PLATFORM, Handler, read_json
from enclave.platform.errors import ApiError

log = logging.getLogger("enclave.platform.admin")
ADMIN_PREFIX = "/v1/admin/"


@web.middleware
async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(ADMIN_PREFIX):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not request.app[PLATFORM].store.check_admin_token(
            token.strip()
        ):
            raise ApiError(401, "admin token required")
    return await handler(request)


async def list_systems(request: web.Request) -> web.Response:
    store = request.app[PLATFORM].store
    return web.json_response({"systems": [s.as_json() for s in store.list_systems()]})


async def system_action(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    name, action = request.match_info["name"], request.match_info["action"]
    now = int(platform.clock().timestamp())
    store = platform.store
    if action == "approve":
        system = store.approve(name)
    elif action == "disable":
        system = store.disable(name, now)
    elif action == "enable":
        system = store.enable(name)
    elif action == "revoke":
        system = store.revoke(name, now)
    else:
        raise ApiError(404, f"unknown action {action!r}")
    log.info("admin: %s %s", action, name)
    return web.json_response(system.as_json())


async def remove_system(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    name = request.match_info["name"]
    platform.store.remove(name, int(platform.clock().timestamp()))
    log.info("admin: removed %s", name)
    return web.json_response({"removed": name})


async def tag_system(request: web.Request) -> web.Response:
    body = await read_json(request)
    changes = body.get("changes")
    if not isinstance(changes, list) or not all(isinstance(c, str) for c in changes):
        raise ApiError(400, "'changes' must be a list like [\"+a\", \"-b\"]")
    add, remove = parse_tag_changes(changes)
    system = request.app[PLATFORM].store.set_tags(request.match_info["name"], add, remove)
    return web.json_response(system.as_json())


async def list_keys(request: web.Request) -> web.Response:
    keys = request.app[PLATFORM].store.list_keys()
    return web.json_response({"keys": [k.as_json() for k in keys]})


def _opt_duration(body: dict[str, object], field: str, default: int | None) -> int | None:
    value = body.get(field, default)
    if value is None:
        return None
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


async def create_key(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    body = await read_json(request)
    uses = body.get("uses", 1)
    if uses is not None and (not isinstance(uses, int) or isinstance(uses, bool)):
        raise ApiError(400, "'uses' must be an integer or null (unlimited)")
    lifetime = _opt_duration(body, "cert_lifetime", DEFAULT_CERT_LIFETIME)
    assert lifetime is not None
    key, token = create_enrolment_key(
        platform.store,
        platform.settings,
        now=int(platform.clock().timestamp()),
        uses=uses,
        expires_in=_opt_duration(body, "expires", 86400),
        tags=body.get("tags", []),
        approval=str(body.get("approval", "auto")),
        ephemeral=bool(body.get("ephemeral", False)),
        cert_lifetime=lifetime,
    )
    log.info("admin: created enrolment key %s", key.id)
    return web.json_response({"token": token, "key": key.as_json()}, status=201)


async def revoke_key(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    platform.store.revoke_key(request.match_info["id"], int(platform.clock().timestamp()))
    return web.json_response({"revoked": request.match_info["id"]})


def setup(app: web.Application) -> None:
    app.middlewares.append(admin_auth)
    r = app.router
    r.add_get("/v1/admin/systems", list_systems)
    r.add_post("/v1/admin/systems/{name}/tags", tag_system)
    r.add_post("/v1/admin/systems/{name}/{action}", system_action)
    r.add_delete("/v1/admin/systems/{name}", remove_system)
    r.add_get("/v1/admin/keys", list_keys)
    r.add_post("/v1/admin/keys", create_key)
    r.add_post("/v1/admin/keys/{id}/revoke", revoke_key)
