"""ControlClient: the agent's one persistent, authenticated connection to the platform.

    connect wss://platform/v1/control (TLS key pinned; checked before anything is signed)
      <- challenge            -> hello (Ed25519 over challenge, name, pin)
      <- welcome              -> handler.on_connected(welcome); reports follow
      <- introduce / withdraw / crl / intents / policy_offer / renew  -> handler.on_message
    lost or refused: reconnect after a jittered exponential backoff (BACKOFF_BASE doubling to
    BACKOFF_MAX, uniform jitter in [0.5, 1] of it); reset after a welcome. A node that
    answers 503 (busy: enclave.platform.admission) is not tried again before its Retry-After
    times a uniform jitter in [1, 2] (retry_after_delay).

Keepalive (Keepalive, not aiohttp's heartbeat, whose pong timeout is half its interval): a ping
every HEARTBEAT seconds, and the channel given up after SILENCE_TIMEOUT seconds without any frame
from the platform. A platform busy with thousands of agents may answer a ping
seconds late; dropping its agents for that would add their reconnects to its load.

Failover: the client holds every URL of the platform (one per node: the enrolment token's, then
the "urls" of a welcome or of a {"type": "urls"} message, which replace them; ``on_urls`` lets
the owner keep them). A failed
attempt moves on to the next URL; the backoff grows only once every URL has failed in a row.
A connection that was up and is lost is retried on the next URL after a delay drawn uniformly
from [0, FAILOVER_SPREAD] seconds (failover_delay), so the thousands of agents of a node that
went away arrive at the others spread out, not at once. A URL where nobody answers (connection
refused, host or network unreachable: the node is gone) is skipped for DOWN_HOLD seconds while
another URL is not so marked, so an agent whose node died does not spend every other attempt
(and a backoff step) on it. A full node leaves new connections waiting in its listen backlog
(enclave.platform.accept_queue): waiting is no failure until the connect timeout.
    Whatever a handler raises is logged with its traceback and ends only that connection: run()
    reconnects; only cancellation stops it.

Protocol reference: enclave.discovery.channel.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hmac
import json
import logging
import random
import ssl
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from cryptography import x509

from enclave.cert.keys import Ed25519PrivateKey, sign, spki_sha256
from enclave.discovery.channel import (
    CLOSE_AUTH_FAILED,
    CONTROL_PATH,
    HEARTBEAT,
    HELLO_TIMEOUT,
    MAX_MESSAGE_BYTES,
    SILENCE_TIMEOUT,
    challenge_message,
)

log = logging.getLogger("enclave.agent.control")
BACKOFF_BASE = 0.25
BACKOFF_MAX = 10.0
FAILOVER_SPREAD = 3.0  # seconds over which a lost connection's reconnects are spread
DOWN_HOLD = 30.0  # seconds a URL where nobody answered is tried only when all others are too
NOBODY_THERE = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                          errno.EHOSTDOWN})
MAX_URLS = 16
# seconds for TCP and TLS: a full node leaves a connection in its backlog until it has room, and
# a node taking over thousands of agents has a queue of seconds
CONNECT_TIMEOUT = 20.0
MAX_RETRY_AFTER = 60  # seconds: a longer Retry-After is capped
CLOSE_TIMEOUT = 2.0  # seconds a close waits for the platform's close frame


class ControlHandler(Protocol):
    def on_connected(self, welcome: dict[str, Any]) -> None: ...
    def on_message(self, msg: dict[str, Any]) -> None: ...
    def on_disconnected(self) -> None: ...


class ControlError(Exception):
    pass


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before attempt ``attempt`` (0-based) of a run of failures: BACKOFF_BASE * 2^n
    capped at BACKOFF_MAX, times a uniform jitter in [0.5, 1]."""
    r = rng or random
    return min(BACKOFF_MAX, BACKOFF_BASE * (2 ** min(attempt, 16))) * r.uniform(0.5, 1.0)


def failover_delay(rng: random.Random | None = None) -> float:
    """Seconds before the first reconnect after a live connection was lost: uniform in
    [0, FAILOVER_SPREAD] (full jitter: a node's agents do not all arrive at once)."""
    r = rng or random
    return r.uniform(0.0, FAILOVER_SPREAD)


def retry_after_delay(headers: Mapping[str, str] | None,
                      rng: random.Random | None = None) -> float:
    """Seconds to wait after a node answered 503 "busy": its Retry-After (whole seconds, at
    most MAX_RETRY_AFTER; 1 when missing or unreadable) times a uniform jitter in [1, 2], so
    the agents a busy node turned away do not all come back at once."""
    r = rng or random
    raw = (headers or {}).get("Retry-After", "").strip()
    seconds = int(raw) if raw.isdigit() else 1
    return min(MAX_RETRY_AFTER, max(1, seconds)) * r.uniform(1.0, 2.0)


def control_urls(urls: Sequence[str] | str) -> list[str]:
    """The wss://.../v1/control URLs for the platform's https:// URLs (duplicates, bad ones and
    those beyond MAX_URLS dropped; order kept)."""
    out: list[str] = []
    for url in [urls] if isinstance(urls, str) else urls:
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        if parts.scheme != "https" or not parts.hostname:
            continue
        ws = urlunsplit(("wss", parts.netloc, CONTROL_PATH, "", ""))
        if ws not in out:
            out.append(ws)
    return out[:MAX_URLS]


class Keepalive:
    """Pings a WebSocket every ``interval`` seconds (whatever else goes over it, so the other
    end hears from a live agent that often); closes it once nothing has been heard for
    ``timeout`` seconds (``silent`` is then True). The owner calls heard() for every frame it
    receives (pongs included: the socket is opened with autoping=False)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, interval: float = HEARTBEAT,
                 timeout: float = SILENCE_TIMEOUT) -> None:
        self.ws = ws
        self.interval = interval
        self.timeout = timeout
        self.silent = False
        self._loop = asyncio.get_running_loop()
        self._heard = self._loop.time()

    def heard(self) -> None:
        self._heard = self._loop.time()

    def quiet_for(self) -> float:
        return self._loop.time() - self._heard

    async def run(self) -> None:
        next_ping = self._loop.time() + self.interval
        while not self.ws.closed:
            due = min(next_ping, self._heard + self.timeout)
            await asyncio.sleep(max(0.05, due - self._loop.time()))
            await asyncio.sleep(0)  # frames that came in while this loop was busy count
            if self.quiet_for() >= self.timeout:
                self.silent = True
                await self.ws.close()
                return
            if self._loop.time() >= next_ping:
                next_ping = self._loop.time() + self.interval
                with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                    await self.ws.ping()


class ControlClient:
    def __init__(self, url: str | Sequence[str], pin: str, name: str, key: Ed25519PrivateKey,
                 handler: ControlHandler,
                 on_urls: Callable[[list[str]], None] | None = None) -> None:
        """url: the platform's https:// URL, or all of them (one per node)."""
        self.urls = [u for u in ([url] if isinstance(url, str) else list(url))]
        self._targets = control_urls(self.urls)
        if not self._targets:
            raise ValueError(f"no usable platform URL in {self.urls!r}")
        self._next = 0
        self._down: dict[str, float] = {}  # target -> loop time until which it is skipped
        self.on_urls = on_urls
        self.ws_url = self._targets[0]
        self.host = urlsplit(self.ws_url).hostname or ""
        # the address the live connection reached (`host` resolved by the connection, off the
        # event loop): what the agent sends discovery datagrams to, so it never resolves a name
        self.address: str | None = None
        self.pin = pin.lower()
        self.name = name
        self.key = key
        self.handler = handler
        self.state = "connecting"
        self.last_error: str | None = None
        self.connects = 0
        self.attempts = 0  # connection attempts so far (welcomed or not)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._ctx.check_hostname = False
        self._ctx.verify_mode = ssl.CERT_NONE  # trust comes from the pin, checked below
        self._ctx.minimum_version = ssl.TLSVersion.TLSv1_2

    def send(self, msg: dict[str, Any]) -> bool:
        """Queue a message on the live connection; False when offline (resent on reconnect
        by whoever owns the state, e.g. discovery reports)."""
        ws = self._ws
        if ws is None or ws.closed or self.state != "connected":
            return False
        asyncio.get_running_loop().create_task(self._send(ws, msg))
        return True

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, msg: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            await ws.send_json(msg)

    def _advance(self, now: float) -> None:
        """Aim the next attempt at the next URL of the list that is not marked down (the next
        one when all are)."""
        n = len(self._targets)
        for step in range(1, n + 1):
            i = (self._next + step) % n
            if self._down.get(self._targets[i], 0.0) <= now:
                self._next = i
                return
        self._next = (self._next + 1) % n

    def _note_down(self, exc: BaseException, now: float) -> None:
        """Mark the current URL down when nobody answered there (see DOWN_HOLD)."""
        os_error = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else None
        if os_error is not None and os_error.errno in NOBODY_THERE:
            self._down[self.ws_url] = now + DOWN_HOLD

    def _learn_urls(self, welcome: dict[str, Any]) -> None:
        """The welcome's "urls" replace the list (the live one kept in it)."""
        urls = welcome.get("urls")
        if not isinstance(urls, list) or not urls:
            return
        urls = [u for u in urls[:MAX_URLS] if isinstance(u, str)]
        targets = control_urls(urls)
        if not targets or urls == self.urls:
            return
        if self.ws_url not in targets:  # still connected here: keep it reachable in the list
            targets.append(self.ws_url)
        self.urls, self._targets = urls, targets
        self._next = targets.index(self.ws_url)
        log.info("control channel: platform URLs now %s", ", ".join(urls))
        if self.on_urls is not None:
            try:
                self.on_urls(list(urls))
            except Exception:
                log.exception("control channel: keeping the platform's URLs failed")

    async def run(self) -> None:
        failures = 0  # attempts in a row that did not reach a welcome
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT,
                                        sock_connect=CONNECT_TIMEOUT)
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                self.ws_url = self._targets[self._next]
                self.host = urlsplit(self.ws_url).hostname or ""
                welcomed = self.connects
                self.attempts += 1
                busy = 0.0  # a 503 "busy" from the node: at least its Retry-After
                try:
                    await self._session(http)
                except ControlError as exc:
                    self.last_error = str(exc)
                    log.warning("control channel: %s", exc)
                except aiohttp.WSServerHandshakeError as exc:
                    self.last_error = f"HTTP {exc.status} from {self.ws_url}"
                    if exc.status == HTTPStatus.SERVICE_UNAVAILABLE:
                        busy = retry_after_delay(exc.headers)
                        self.last_error += f" (busy; retrying in {busy:.1f} s)"
                    log.info("control channel refused: %s", self.last_error)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self._note_down(exc, loop.time())
                    log.info("control channel unavailable: %s", self.last_error)
                except Exception as exc:  # a handler's bug: log it, reconnect
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("control channel: error while handling the platform's "
                                  "messages; reconnecting")
                finally:
                    was_connected = self.state == "connected"
                    self._ws = None
                    if self.state != "auth-failed":
                        self.state = "disconnected"
                    if was_connected:
                        self._disconnected()
                if self.connects != welcomed:
                    self._down.pop(self.ws_url, None)
                self._advance(loop.time())
                if self.connects != welcomed:  # was up: a node went away, or it closed us
                    failures = 0
                    delay = failover_delay()
                else:
                    failures += 1
                    delay = max(busy, backoff_delay((failures - 1) // len(self._targets)))
                log.debug("control channel: reconnecting to %s in %.2fs",
                          self._targets[self._next], delay)
                await asyncio.sleep(delay)

    def _disconnected(self) -> None:
        try:
            self.handler.on_disconnected()
        except Exception:
            log.exception("control channel: on_disconnected failed")

    async def _session(self, http: aiohttp.ClientSession) -> None:
        self.state = "connecting"
        async with http.ws_connect(self.ws_url, ssl=self._ctx, heartbeat=None,
                                   max_msg_size=MAX_MESSAGE_BYTES, autoping=False,
                                   timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT)
                                   ) as ws:
            self._check_pin(ws)
            peer = ws.get_extra_info("peername")
            self.address = str(peer[0]) if isinstance(peer, tuple) and peer else None
            challenge = await self._receive(ws)
            if challenge.get("type") != "challenge":
                raise ControlError("platform did not send a challenge")
            nonce = base64.b64decode(str(challenge.get("nonce", "")), validate=True)
            if len(nonce) < 16:
                raise ControlError("platform challenge too short")
            signature = sign(self.key, challenge_message(nonce, self.name, self.pin))
            await ws.send_json({"type": "hello", "name": self.name,
                                "signature": base64.b64encode(signature).decode()})
            welcome = await self._receive(ws)
            if welcome.get("type") != "welcome":
                self.state = "auth-failed"
                raise ControlError(f"platform refused this system: {welcome.get('error')}")
            self.state = "connected"
            self.last_error = None
            self.connects += 1
            self._ws = ws
            log.info("control channel connected to %s", self.ws_url)
            self._learn_urls(welcome)
            self.handler.on_connected(welcome)
            keepalive = Keepalive(ws)
            watch = asyncio.get_running_loop().create_task(keepalive.run())
            try:
                await self._messages(ws, keepalive)
            finally:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            if keepalive.silent:
                raise ControlError(f"no frame from the platform in {keepalive.timeout:.0f} s")
            if ws.close_code == CLOSE_AUTH_FAILED:
                self.state = "auth-failed"
            log.info("control channel closed (code %s)", ws.close_code)

    async def _messages(self, ws: aiohttp.ClientWebSocketResponse, keepalive: Keepalive) -> None:
        """The platform's messages to the handler until the channel closes."""
        async for msg in ws:
            keepalive.heard()
            if msg.type == aiohttp.WSMsgType.PING:
                with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                    await ws.pong(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if not isinstance(data, dict):
                    continue
                if data.get("type") == "error":
                    log.warning("platform: %s", data.get("error"))
                elif data.get("type") == "urls":  # `platform urls add|remove` ran
                    self._learn_urls(data)
                else:
                    self.handler.on_message(data)
            elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                break

    def _check_pin(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        ssl_obj = ws.get_extra_info("ssl_object")
        der = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
        if not der:
            raise ControlError("cannot read the platform's TLS certificate")
        got = spki_sha256(x509.load_der_x509_certificate(der))
        if not hmac.compare_digest(got, self.pin):
            self.state = "auth-failed"
            raise ControlError(f"platform TLS key {got} does not match the pin {self.pin}")

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        """The next text message during setup (pings answered, pongs skipped)."""
        deadline = asyncio.get_running_loop().time() + HELLO_TIMEOUT
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise ControlError("platform did not answer during setup")
            msg = await ws.receive(timeout=left)
            if msg.type == aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type != aiohttp.WSMsgType.PONG:
                break
        if msg.type != aiohttp.WSMsgType.TEXT:
            if ws.close_code == CLOSE_AUTH_FAILED:
                self.state = "auth-failed"
                raise ControlError("platform refused this system (authentication failed)")
            raise ControlError(f"control channel closed during setup ({msg.type.name})")
        data = json.loads(msg.data)
        if not isinstance(data, dict):
            raise ControlError("unexpected message from platform")
        return data
