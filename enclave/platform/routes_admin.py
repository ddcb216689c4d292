"""Admin JSON API, behind the admin bearer token made at `platform init` (only its hash is kept).

    GET    /v1/admin/systems                       list
    POST   /v1/admin/systems/{name}/approve        pending -> active
    POST   /v1/admin/systems/{name}/disable        certificates put on hold (in the CRL)
    POST   /v1/admin/systems/{name}/enable         hold lifted
    POST   /v1/admin/systems/{name}/revoke         permanent; certificates revoked
    DELETE /v1/admin/systems/{name}                revoked and forgotten, with the gateway
                                                    policies whose gateway it is
    POST   /v1/admin/systems/{name}/tags           {"changes": ["+a", "-b"]}
    GET    /v1/admin/keys                          list enrolment keys (never secrets)
    POST   /v1/admin/keys                          {"uses": N|null, "expires": "24h"|null, "tags":
                                                    [...], "approval", "ephemeral",
                                                    "cert_lifetime": "30d"} -> {"token", "key"}
    POST   /v1/admin/keys/{id}/revoke
    GET    /v1/admin/gateways                      systems that serve routes (with whether their
                                                    current certificate carries them yet) and
                                                    the gateway access policies
    PUT    /v1/admin/systems/{name}/gateway        {"routes": ["198.19.2.0/24", ...], "nat": true}
    DELETE /v1/admin/systems/{name}/gateway        no longer a gateway (its gateway policies
                                                    stay, offering no routes: Store.set_gateway)
    GET    /v1/admin/gateway-policies              {"policies": [{"name", "from", "gateway",
                                                    "routes", "acl", "created_at"}]}
    POST   /v1/admin/gateway-policies              {"name": "ops-lan", "from": "tag:ops",
                                                    "gateway": NAME, "routes": ["198.19.50.0/24"],
                                                    "acl": ["tcp:22", "icmp"] | null (any)}
                                                    -> 201 the stored policy (as listed)
    DELETE /v1/admin/gateway-policies/{name}       its intents are withdrawn
    GET    /v1/admin/nodes                         the platform's nodes (enclave.platform.nodes):
                                                    {"now", "stale_after", "nodes": [{"id",
                                                    "listen", "url", "host", "pid", "version",
                                                    "started_at", "seen_at", "seen_ago",
                                                    "agents", "state": "alive"|"stale"}]}

Request bodies are checked with str_field / str_list (app.py, beside read_json): a wrong type is
a 400 naming the field. A gateway policy is validated like `enclave platform policy add
--gateway` (one validator: enclave.platform.policy.validate_gateway_policy): 400 for a malformed
name, selector, route or ACL entry, 404 for an unknown gateway, 409 for a policy name in use;
nothing is stored then.

Gateway changes take effect like `enclave platform systems gateway`: the hub pushes a renewal to
the gateway (its next certificate carries the routes) and re-introduces its pairs.
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
from enclave.platform.app import PLATFORM, Handler, read_json, str_field, str_list
from enclave.platform.authority import refused_if_too_large
from enclave.platform.errors import ApiError
from enclave.platform.frontdoor import FRONT_DOOR, transport_fd
from enclave.platform.gateways import needs_renewal
from enclave.platform.hub import HUB
from enclave.platform.nodes import list_nodes, nodes_json
from enclave.platform.policy import add_gateway_policy, validate_gateway_policy
from enclave.policy.gateway import GatewayConfigError, parse_routes

log = logging.getLogger("enclave.platform.admin")
ADMIN_PREFIX = "/v1/admin/"


@web.middleware
async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(ADMIN_PREFIX):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not await request.app[PLATFORM].store.check_admin_token(
            token.strip()
        ):
            raise ApiError(401, "admin token required")
        limits = request.app.get(FRONT_DOOR)
        if limits is not None:  # an admin's keep-alive connection is not aged out
            limits.authenticated(transport_fd(request.transport))
    return await handler(request)


async def list_systems(request: web.Request) -> web.Response:
    store = request.app[PLATFORM].store
    return web.json_response({"systems": [s.as_json() for s in await store.list_systems()]})


async def system_action(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    name, action = request.match_info["name"], request.match_info["action"]
    now = int(platform.clock().timestamp())
    store = platform.store
    if action == "approve":
        system = await store.approve(name)
    elif action == "disable":
        system = await store.disable(name, now)
    elif action == "enable":
        system = await store.enable(name)
    elif action == "revoke":
        system = await store.revoke(name, now)
    else:
        raise ApiError(404, f"unknown action {action!r}")
    log.info("admin: %s %s", action, name)
    return web.json_response(system.as_json())


async def remove_system(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    name = request.match_info["name"]
    policies = await platform.store.remove(name, int(platform.clock().timestamp()))
    log.info("admin: removed %s%s", name,
             f" and its gateway policies {', '.join(policies)}" if policies else "")
    return web.json_response({"removed": name})


async def tag_system(request: web.Request) -> web.Response:
    body = await read_json(request)
    changes = body.get("changes")
    if not isinstance(changes, list) or not all(isinstance(c, str) for c in changes):
        raise ApiError(400, "'changes' must be a list like [\"+a\", \"-b\"]")
    add, remove = parse_tag_changes(changes)
    platform = request.app[PLATFORM]
    with refused_if_too_large(400):
        system = await platform.store.set_tags(request.match_info["name"], add, remove,
                                         fits=platform.authority.fits())
    return web.json_response(system.as_json())


async def get_nodes(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    nodes = await list_nodes(platform.store)
    return web.json_response(nodes_json(nodes, int(platform.clock().timestamp())))


async def list_keys(request: web.Request) -> web.Response:
    keys = await request.app[PLATFORM].store.list_keys()
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
    key, token = await create_enrolment_key(
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
    await platform.store.revoke_key(request.match_info["id"], int(platform.clock().timestamp()))
    return web.json_response({"revoked": request.match_info["id"]})


def _hub_changed(request: web.Request) -> None:
    """Tell the hub directly (faster than its next look at Store.data_version)."""
    hub = request.app.get(HUB)
    if hub is not None:
        hub.changed()


async def _gateway_policies(request: web.Request) -> list[dict[str, object]]:
    policies = await request.app[PLATFORM].store.list_policies()
    return [{"name": p.name, "from": p.from_sel, "gateway": p.gateway, "routes": list(p.routes),
             "acl": list(p.acl), "created_at": p.created_at}
            for p in policies if p.gateway is not None]


async def list_gateways(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    now = int(platform.clock().timestamp())
    policies = await _gateway_policies(request)
    snapshot = await platform.store.snapshot(now, frozenset(
        s.name for s in await platform.store.list_systems() if s.gateway_routes))
    out = []
    for system in snapshot.systems.values():
        if not system.gateway_routes:
            continue
        out.append({
            "name": system.name,
            "routes": [str(r) for r in system.gateway_routes],
            "nat": system.gateway_nat,
            "state": system.state,
            "certified": not needs_renewal(snapshot, system, now),
            "policies": [p["name"] for p in policies if p["gateway"] == system.name],
        })
    return web.json_response({"gateways": out, "policies": policies})


async def list_gateway_policies(request: web.Request) -> web.Response:
    return web.json_response({"policies": await _gateway_policies(request)})


async def post_gateway_policy(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    body = await read_json(request)
    name, from_sel, gateway = (str_field(body, f) for f in ("name", "from", "gateway"))
    routes = str_list(body, "routes")
    acl = None if body.get("acl") is None else str_list(body, "acl")
    try:
        spec = validate_gateway_policy(name, from_sel, gateway, routes, acl)
    except ValueError as exc:  # GatewayConfigError is one
        raise ApiError(400, str(exc)) from None
    now = int(platform.clock().timestamp())
    await add_gateway_policy(platform.store, spec, now)
    log.info("admin: gateway policy %s: %s -> %s routes %s acl %s", spec.name, spec.from_sel,
             spec.gateway, ",".join(spec.routes), ",".join(spec.acl))
    _hub_changed(request)
    return web.json_response({"name": spec.name, "from": spec.from_sel, "gateway": spec.gateway,
                              "routes": list(spec.routes), "acl": list(spec.acl),
                              "created_at": now}, status=201)


async def delete_gateway_policy(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await request.app[PLATFORM].store.remove_policy(name, gateway_only=True)
    log.info("admin: gateway policy %s removed", name)
    _hub_changed(request)
    return web.json_response({"removed": name})


async def set_gateway(request: web.Request) -> web.Response:
    body = await read_json(request)
    routes, nat = body.get("routes"), body.get("nat", True)
    if not isinstance(routes, list) or not routes or not all(isinstance(r, str) for r in routes):
        raise ApiError(400, "'routes' must be a non-empty list of IPv4 subnets "
                            "(DELETE the gateway to clear it)")
    if not isinstance(nat, bool):
        raise ApiError(400, "'nat' must be true (masquerade) or false (routed)")
    try:
        parsed = parse_routes(routes)
    except GatewayConfigError as exc:
        raise ApiError(400, str(exc)) from None
    platform = request.app[PLATFORM]
    with refused_if_too_large(400):
        system = await platform.store.set_gateway(request.match_info["name"], parsed, nat,
                                            fits=platform.authority.fits())
    log.info("admin: %s is a gateway for %s (%s)", system.name,
             ",".join(map(str, parsed)), "masquerade" if nat else "routed")
    _hub_changed(request)
    return web.json_response(system.as_json())


async def clear_gateway(request: web.Request) -> web.Response:
    store = request.app[PLATFORM].store
    system = await store.set_gateway(request.match_info["name"], (), True)
    kept = [p[0] for p in await store.list_gateway_policies() if p[2] == system.name]
    log.info("admin: %s is no longer a gateway%s", system.name,
             f" (its gateway policies {', '.join(kept)} stay, offering no routes)" if kept else "")
    _hub_changed(request)
    return web.json_response(system.as_json())


def setup(app: web.Application) -> None:
    app.middlewares.append(admin_auth)
    r = app.router
    r.add_get("/v1/admin/systems", list_systems)
    r.add_get("/v1/admin/gateways", list_gateways)
    r.add_get("/v1/admin/gateway-policies", list_gateway_policies)
    r.add_post("/v1/admin/gateway-policies", post_gateway_policy)
    r.add_delete("/v1/admin/gateway-policies/{name}", delete_gateway_policy)
    r.add_put("/v1/admin/systems/{name}/gateway", set_gateway)
    r.add_delete("/v1/admin/systems/{name}/gateway", clear_gateway)
    r.add_post("/v1/admin/systems/{name}/tags", tag_system)
    r.add_post("/v1/admin/systems/{name}/{action}", system_action)
    r.add_delete("/v1/admin/systems/{name}", remove_system)
    r.add_get("/v1/admin/keys", list_keys)
    r.add_get("/v1/admin/nodes", get_nodes)
    r.add_post("/v1/admin/keys", create_key)
    r.add_post("/v1/admin/keys/{id}/revoke", revoke_key)
