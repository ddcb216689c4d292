"""Control channel (WebSocket), intents API, tag-policy admin API, discovery reflector startup.

    GET    /v1/control                  WebSocket; protocol in enclave.discovery.channel
    POST   /v1/intents                  {"statement", "signature"} signed by the holder's key:
                                        op add | remove | list (enclave.policy.intent)
    GET    /v1/admin/policies           list tag policies                    (admin token)
    POST   /v1/admin/policies           {"name", "from": "tag:web", "to": "tag:db"}: strings
                                        (else 400), validated like `platform policy add`
                                        (validate_policy: 400), 409 for a name in use;
                                        nothing is stored on any refusal
    DELETE /v1/admin/policies/{name}

Cloaking: /v1/intents answers "add" and "remove" with the same bytes whether or not the peer
exists, and "list" reports only what the holder itself asked for, plus "mutual": true where the
peer holds intent back (which is when they would be introduced anyway).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMessage, WSMsgType, web

from enclave.cert.keys import verify
from enclave.discovery.candidates import CandidateKind, NatBehaviour, Transport
from enclave.discovery.channel import (
    CHALLENGE_SIZE,
    CLOSE_AUTH_FAILED,
    CLOSE_REPLACED,
    CONTROL_PATH,
    HELLO_TIMEOUT,
    INTENTS_PATH,
    MAX_MESSAGE_BYTES,
    PLATFORM_HEARTBEAT,
    challenge_message,
)
from enclave.discovery.dualstack import unmapped
from enclave.discovery.introduction import IntroductionError, candidates_from_json
from enclave.logsafe import RejectionLog, shown
from enclave.platform.admission import ADMISSION
from enclave.platform.app import (
    LISTEN,
    PLATFORM,
    Handler,
    Platform,
    parse_json,
    read_json,
    str_field,
)
from enclave.platform.discovery import DiscoveryService, Reflector, discovery_ports
from enclave.platform.errors import ApiError
from enclave.platform.frontdoor import FRONT_DOOR, transport_fd
from enclave.platform.hub import HUB, Hub, Session, usable
from enclave.platform.policy import validate_policy
from enclave.platform.relay import RELAY
from enclave.platform.store import System
from enclave.platform.tls_buffers import shrink_tls_read_buffer
from enclave.policy.intent import IntentError, IntentStatement, check_fresh, decode_signed
from enclave.policy.mutual import SystemView, policy_offers

log = logging.getLogger("enclave.platform.control")
DISCOVERY = web.AppKey("discovery", DiscoveryService)
MAX_CANDIDATES = 32
REPORTED_KINDS = (CandidateKind.PRIVATE, CandidateKind.PUBLIC)  # what an agent may report


# -- intents -----------------------------------------------------------------------------------


AUTH_FAILED = "authentication failed"  # the one answer for unknown name and bad signature
_NOBODY_KEY = bytes(32)  # verified against when the holder is unknown: the same work is done


async def _holder_key(platform: Platform, name: str) -> bytes | None:
    try:
        system = await platform.store.get_system(name)
    except ApiError:
        system = None
    if system is None or system.state != "active":
        return None
    return system.public_key


async def accept_intent(platform: Platform, signed: object, *, policy_check: bool = False
                  ) -> tuple[IntentStatement, dict[str, Any]]:
    """Verify a signed statement from its holder, apply it; the (cloaked) reply body."""
    try:
        st, _raw, _sig = decode_signed(signed)
    except IntentError as exc:
        raise ApiError(400, str(exc)) from None
    key = await _holder_key(platform, st.from_name)
    try:
        st, raw, sig = decode_signed(signed, key or _NOBODY_KEY)
    except IntentError:
        # an unknown or inactive holder is answered exactly like a wrong signature: the
        # endpoint is no oracle for which names exist
        raise ApiError(401, AUTH_FAILED) from None
    if key is None:
        raise ApiError(401, AUTH_FAILED)
    try:
        now = int(platform.clock().timestamp())
        check_fresh(st, now)
    except IntentError as exc:
        raise ApiError(401, str(exc)) from None
    if st.op == "policy":
        raise ApiError(400, "policy statements come from the platform")
    if not await platform.store.use_nonce("intent:" + st.nonce, now):
        raise ApiError(401, "replayed intent statement")
    store = platform.store
    if st.op == "add":
        if st.policy is not None:
            policies = {p.name: p for p in await store.list_policies()}
            if st.policy not in policies:
                raise ApiError(404, f"no policy {st.policy!r}")
            policy = policies[st.policy]
            views = [_view(s, now) for s in await store.list_systems()]
            if (st.from_name, st.to_name) not in policy_offers(policy.from_sel, policy.to_sel,
                                                               views):
                raise ApiError(403, "policy does not cover this pair")
        await store.put_intent(st.from_name, st.to_name, raw, sig, st.iat, st.exp, st.policy)
        log.info("intent: %s -> %s%s", st.from_name, st.to_name,
                 f" (policy {st.policy})" if st.policy else "")
        return st, {"ok": True, "op": "add", "peer": st.to_name}
    if st.op == "remove":
        await store.delete_intent(st.from_name, st.to_name)
        log.info("intent removed: %s -> %s", st.from_name, st.to_name)
        return st, {"ok": True, "op": "remove", "peer": st.to_name}
    mine = await store.list_intents(st.from_name)
    back = {r.from_name for r in await store.list_intents() if r.to_name == st.from_name
            and (r.expires_at is None or now < r.expires_at)}
    return st, {"intents": [
        {"peer": r.to_name, "issued_at": r.issued_at, "expires_at": r.expires_at,
         "policy": r.policy,
         "mutual": r.to_name in back and (r.expires_at is None or now < r.expires_at)}
        for r in mine
    ]}


def _view(system: System, now: int) -> SystemView:
    return SystemView(system.name, system.tags, usable(system, now))


async def post_intent(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    st, reply = await accept_intent(platform, await read_json(request))
    if st.op != "list":  # the hub decides these two again (a scoped pass)
        request.app[HUB].changed((st.from_name, st.to_name))
    return web.json_response(reply)


# -- policies (admin) --------------------------------------------------------------------------


async def list_policies(request: web.Request) -> web.Response:
    rows = await request.app[PLATFORM].store.list_policies()
    return web.json_response({"policies": [
        {"name": p.name, "from": p.from_sel, "to": p.to_sel, "created_at": p.created_at}
        for p in rows]})


async def add_policy(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    body = await read_json(request)
    name, f, t = (str_field(body, k) for k in ("name", "from", "to"))
    try:
        validate_policy(name, f, t)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    await platform.store.add_policy(name, f, t, int(platform.clock().timestamp()))
    request.app[HUB].changed()
    return web.json_response({"name": name, "from": f, "to": t}, status=201)


async def remove_policy(request: web.Request) -> web.Response:
    await request.app[PLATFORM].store.remove_policy(request.match_info["name"])
    request.app[HUB].changed()
    return web.json_response({"removed": request.match_info["name"]})


@web.middleware
async def notify_hub(request: web.Request, handler: Handler) -> web.StreamResponse:
    """After an admin change (disable, revoke, tags, ...) the hub re-evaluates at once."""
    response = await handler(request)
    if request.method != "GET" and request.path.startswith("/v1/admin/"):
        hub = request.app.get(HUB)
        if hub is not None:
            hub.changed()
    return response


# -- the control channel -----------------------------------------------------------------------


async def control(request: web.Request) -> web.StreamResponse:
    """GET /v1/control: admitted (admission.py) until its welcome, then the session."""
    admission = request.app.get(ADMISSION)
    if admission is not None and not await admission.enter():
        return admission.busy_response(request)
    try:
        ws, session = await _welcome(request)
    finally:
        if admission is not None:
            admission.leave()
    if session is not None:
        await _session(request, ws, session)
    return ws


async def _welcome(request: web.Request) -> tuple[web.WebSocketResponse, Session | None]:
    """The WebSocket upgrade, challenge, hello and welcome; the session, or None when the
    agent was refused or went away."""
    platform = request.app[PLATFORM]
    hub = request.app[HUB]
    # the agent pings every HEARTBEAT (any frame resets this side's timer): the platform pings
    # only an agent silent for PLATFORM_HEARTBEAT (cut off, or gone), so its pong timeout (half
    # of that) is not missed for live agents by a node that is seconds behind under load
    ws = web.WebSocketResponse(heartbeat=PLATFORM_HEARTBEAT, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    try:  # an agent that goes away during the handshake is no error worth a traceback
        session = await _authenticate(platform, ws, hub.rejections, request.remote)
        if session is None:
            return ws, None
        limits = request.app.get(FRONT_DOOR)
        if limits is not None:  # an agent: no longer counted against its address, never aged
            limits.authenticated(transport_fd(request.transport))
        # out. Loopback candidates make sense only when every system is on the platform's
        # host: a platform served on loopback, reached from loopback (never through a local
        # proxy in front of a public platform)
        session.local = (_is_loopback(urlsplit(platform.settings.url).hostname)
                         and _is_loopback(request.remote))
        # a dual-stack listener: v4 is ::ffff:
        session.ipv6 = ":" in unmapped(request.remote or "")
        ports = request.app[DISCOVERY].ports if DISCOVERY in request.app else None
        crl = await hub.welcome_crl()
        await ws.send_json({
            "type": "welcome", "name": session.name, "time": platform.clock().timestamp(),
            "discovery": {"udp": list(ports), "tcp": ports[1]} if ports else None,
            "crl": crl["crl"], "crl_number": crl["crl_number"],
            "urls": list(hub.urls or platform.settings.urls or (platform.settings.url,)),
        })
    except ConnectionError:
        return ws, None
    return ws, session


async def _session(request: web.Request, ws: web.WebSocketResponse, session: Session) -> None:
    """A welcomed agent's session: its messages until it ends."""
    platform = request.app[PLATFORM]
    hub = request.app[HUB]
    hub.join(session)
    writer = asyncio.get_running_loop().create_task(_writer(ws, session))
    try:
        async for msg in _messages(ws):
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                await _handle(platform, hub, session, parse_json(msg.data))
            except (ValueError, TypeError, KeyError, IntroductionError, ApiError) as exc:
                hub.rejections.note(session.name, "control: bad message from %s: %s",
                                    session.name, shown(str(exc), 200))
            if session.closed:
                break
    finally:
        if ws.exception() is not None:  # e.g. no pong in time: say why the session ended
            log.info("control: %s disconnected: %s", session.name, shown(str(ws.exception()),
                                                                          200))
        hub.leave(session)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
        await ws.close()


async def _messages(ws: web.WebSocketResponse) -> AsyncIterator[WSMessage]:
    """The session's messages until it ends; a connection reset by the agent just ends it
    (a traceback for each of thousands of dropped agents would stall the node)."""
    with contextlib.suppress(ConnectionError):
        async for msg in ws:
            yield msg


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


async def _authenticate(platform: Platform, ws: web.WebSocketResponse,
                        rejections: RejectionLog, remote: str | None) -> Session | None:
    nonce = secrets.token_bytes(CHALLENGE_SIZE)
    await ws.send_json({"type": "challenge", "v": 1, "nonce": base64.b64encode(nonce).decode()})
    try:
        msg = await ws.receive(timeout=HELLO_TIMEOUT)
        hello = parse_json(msg.data) if msg.type == WSMsgType.TEXT else None
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            raise ValueError("expected hello")
        name = hello["name"]
        sig = base64.b64decode(hello["signature"], validate=True)
    except (TimeoutError, ValueError, TypeError, KeyError, binascii.Error):
        name, sig = None, b""
    now = int(platform.clock().timestamp())
    session = None
    if isinstance(name, str) and len(name) <= 16:
        system, cert = await platform.store.system_and_certificate(name, now)
        if (system is not None and system.state == "active" and cert is not None and verify(
                system.public_key, sig, challenge_message(nonce, name, platform.settings.pin))):
            session = Session(name, cert.serial, public_key=system.public_key)
            platform.store.note_seen(name, now)  # written in the hub's next batch
    if session is None:
        rejections.note(remote, "control: authentication failed (%s) from %s", shown(name),
                        remote)
        with contextlib.suppress(Exception):
            await ws.send_json({"type": "error", "error": "authentication failed"})
        await ws.close(code=CLOSE_AUTH_FAILED, message=b"authentication failed")
    return session


async def _writer(ws: web.WebSocketResponse, session: Session) -> None:
    while True:
        msg = await session.queue.get()
        if msg is None:
            await ws.close(code=CLOSE_REPLACED)
            return
        await ws.send_json(msg)


async def _handle(platform: Platform, hub: Hub, session: Session, msg: object) -> None:
    if not isinstance(msg, dict):
        raise ValueError("message is not an object")
    kind = msg.get("type")
    if kind == "report":
        candidates, dropped = candidates_from_json(msg.get("candidates"), limit=MAX_CANDIDATES,
                                                   loopback=session.local)
        reported = tuple(c for c in candidates if c.kind in REPORTED_KINDS
                         and c.addr.transport in (Transport.UDP, Transport.TCP))
        if dropped or len(reported) != len(candidates):
            hub.rejections.note(session.name, "control: dropped %d of %d candidates from %s "
                                "(not an acceptable IP literal, or not a reportable kind)",
                                dropped + len(candidates) - len(reported),
                                dropped + len(candidates), session.name)
        candidates = reported
        nat = NatBehaviour(msg.get("nat", "unknown"))
        mappings = msg.get("mappings")
        hub.report(session, candidates, nat, mappings if isinstance(mappings, dict) else {})
    elif kind == "intent":
        st, _reply = await accept_intent(platform, msg.get("signed"))
        if st.from_name != session.name:
            raise ValueError("intent for another system")
        hub.changed((st.from_name, st.to_name))
    else:
        raise ValueError(f"unknown message type {kind!r}")


# -- wiring ------------------------------------------------------------------------------------


async def _startup(app: web.Application) -> None:
    platform = app[PLATFORM]
    host, port = app.get(LISTEN) or ("0.0.0.0", urlsplit(platform.settings.url).port or 443)
    # the relay starts later: looked up lazily
    hub = Hub(platform, relay=lambda: app.get(RELAY), listen=(host, port))
    app[HUB] = hub
    await hub.start()

    def lookup(name: str) -> bytes | None:  # from the hub's last read of the store
        return hub.active_keys.get(name)

    service = DiscoveryService(Reflector(lookup), host, discovery_ports(port))
    try:
        await service.start()
        app[DISCOVERY] = service
    except OSError as exc:
        await service.stop()
        log.warning("discovery reflector not started: %s", exc)


async def _shutdown(app: web.Application) -> None:
    hub = app.get(HUB)
    if hub is not None:
        await hub.stop()
    service = app.get(DISCOVERY)
    if service is not None:
        await service.stop()


def setup(app: web.Application) -> None:
    shrink_tls_read_buffer()  # thousands of control channels: 32 KiB each, not 256 KiB
    app.middlewares.append(notify_hub)
    app.router.add_get(CONTROL_PATH, control)
    app.router.add_post(INTENTS_PATH, post_intent)
    app.router.add_get("/v1/admin/policies", list_policies)
    app.router.add_post("/v1/admin/policies", add_policy)
    app.router.add_delete("/v1/admin/policies/{name}", remove_policy)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
