"""`enclave platform serve`: run the HTTPS API until SIGTERM/SIGINT, then shut down gracefully.

Settings beyond the flags come from ENCLAVE_PLATFORM_* variables, else DATA/config.toml
(enclave.platform.config).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import ssl
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from enclave.cert.files import atomic_write
from enclave.platform import relay, routes_admin, routes_control, routes_enrol, routes_pki
from enclave.platform.accept_queue import QueueingSite
from enclave.platform.admission import (
    ADMISSION,
    Admission,
    admission_middleware,
    max_in_flight_from_env,
)
from enclave.platform.app import (
    LISTEN,
    MAX_BODY_BYTES,
    PLATFORM,
    Platform,
    error_middleware,
)
from enclave.platform.config import CONFIG_FILE, apply_config
from enclave.platform.frontdoor import (
    FD_RESERVE,
    FRONT_DOOR,
    UNAUTH_LIFETIMES,
    ConnectionLimits,
    guarded_listener,
    idle_timeout,
    raise_file_limit,
)
from enclave.platform.hub import HUB
from enclave.platform.metrics import METRICS_ENV, FrontDoorCounts
from enclave.platform.paths import PlatformPaths
from enclave.platform.relay import RELAY, RelayServer
from enclave.platform.relay_ws import RELAY_TLS_ENV
from enclave.promhttp import MetricsServer, parse_listen
from enclave.proto.relay_batch import RELAY_WS_PATH

log = logging.getLogger("enclave.platform")
SHUTDOWN_TIMEOUT = 5.0
ROUTES: tuple[Callable[[web.Application], None], ...] = (
    routes_pki.setup,
    routes_enrol.setup,
    routes_admin.setup,
    routes_control.setup,
    relay.setup,
)  # each adds its routes (and start-up / clean-up tasks) to the app


def build_app(platform: Platform) -> web.Application:
    """The aiohttp application: the platform's state in ``app[PLATFORM]``, every route module."""
    app = web.Application(client_max_size=MAX_BODY_BYTES,
                          middlewares=[admission_middleware, platform.metrics.enrol_middleware(),
                                       error_middleware])
    app[PLATFORM] = platform
    app[ADMISSION] = Admission(max_in_flight_from_env())
    for setup in ROUTES:
        setup(app)
    return app


def tls_context(platform: Platform) -> ssl.SSLContext:
    """Server TLS context; the decrypted key goes to OpenSSL through a 0600 file that is removed
    at once (ssl.load_cert_chain only reads files), re-encrypted with a throwaway passphrase."""
    paths = platform.paths
    key = paths.tls_keystore().load()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    throwaway = serialization.BestAvailableEncryption(secrets.token_bytes(32))
    with tempfile.TemporaryDirectory(dir=paths.root) as tmp:
        tmp_key = Path(tmp) / "tls.key"
        password = throwaway.password
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, throwaway
        )
        atomic_write(tmp_key, pem)
        ctx.load_cert_chain(str(paths.tls_cert), str(tmp_key), password=password)
    return ctx


async def serve_metrics(platform: Platform, app: web.Application, listen: str,
                        sites: Sequence[QueueingSite] = ()) -> MetricsServer:
    """Prometheus /metrics on `listen` (HOST:PORT), reading the hub, the relay, the front door
    and the admission control of `app` (and the listeners' `sites`)."""
    def agents() -> int:
        hub = app.get(HUB)
        return 0 if hub is None else len(hub.sessions)

    def relay_counts() -> RelayServer | None:
        service = app.get(RELAY)
        return None if service is None else service.server

    def front_door() -> FrontDoorCounts:
        limits, admission = app.get(FRONT_DOOR), app.get(ADMISSION)
        return FrontDoorCounts(
            unauthenticated=0 if limits is None else len(limits.unauth),
            authenticated=0 if limits is None else len(limits.auth),
            held=0 if limits is None else limits.held,
            refused={} if limits is None else dict(limits.refused),
            abandoned=sum(site.abandoned for site in sites),
            in_flight=0 if admission is None else admission.in_flight,
            waiting=0 if admission is None else admission.waiting,
            busy=0 if admission is None else admission.refused)

    platform.metrics.watch(agents, relay_counts, front_door)
    host, port = parse_listen(listen)
    server = MetricsServer(platform.metrics.registry, host, port)
    await server.start()
    log.info("metrics on http://%s/metrics", listen)
    return server


async def serve(platform: Platform, host: str, port: int, metrics: str | None = None) -> None:
    """metrics: HOST:PORT for Prometheus /metrics (else $ENCLAVE_PLATFORM_METRICS; else off)."""
    app = build_app(platform)
    app[LISTEN] = (host, port)
    limits = app[FRONT_DOOR] = ConnectionLimits.from_env(
        max(64, raise_file_limit() - FD_RESERVE))
    timeout = idle_timeout()
    runner = web.AppRunner(app, handle_signals=False, access_log=None, keepalive_timeout=timeout)
    await runner.setup()
    try:
        sock = guarded_listener(host, port, limits, "api", lifetime=UNAUTH_LIFETIMES * timeout)
    except BaseException:
        await runner.cleanup()
        raise
    admission = app[ADMISSION]
    site = QueueingSite(runner, sock, ssl_context=tls_context(platform),
                        handshake_timeout=timeout, gates=(admission,))
    await site.start()
    sites = [site]
    extra = os.environ.get(RELAY_TLS_ENV, "").strip()
    if extra:  # the relay over TLS (and the API) on a second port, e.g. 443
        rhost, _, rport_text = extra.rpartition(":")
        try:
            rport = int(rport_text)
        except ValueError:
            raise ValueError(f"{RELAY_TLS_ENV}={extra!r} is not HOST:PORT") from None
        rsock = guarded_listener(rhost or "0.0.0.0", rport, limits, "relay-tls",
                                 lifetime=UNAUTH_LIFETIMES * timeout)
        relay_site = QueueingSite(runner, rsock, ssl_context=tls_context(platform),
                                  handshake_timeout=timeout, gates=(admission,))
        await relay_site.start()
        sites.append(relay_site)
        log.info("relay over TLS also on https://%s%s", extra, RELAY_WS_PATH)
    listen = metrics or os.environ.get(METRICS_ENV)
    exporter = await serve_metrics(platform, app, listen, sites) if listen else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("platform %s serving on https://%s:%d (org %s; at most %d connections, %d "
             "unauthenticated, %d per address; idle timeout %.0f s)", platform.settings.url,
             host, port, platform.settings.org, limits.max_total, limits.max_unauth,
             limits.max_per_address, timeout)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        if exporter is not None:
            await exporter.close()
        try:
            await asyncio.wait_for(runner.cleanup(), SHUTDOWN_TIMEOUT)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        log.info("stopped")


def run(paths: PlatformPaths, listen: tuple[str, int] | None, metrics: str | None = None
        ) -> None:
    """Serve until SIGTERM/SIGINT, with DATA/config.toml's settings under the environment's;
    listen: (host, port), else 0.0.0.0 and the port of the platform's URL."""
    applied = apply_config(paths.root)
    if applied:
        log.info("from %s: %s", paths.root / CONFIG_FILE, ", ".join(applied))
    asyncio.run(_open_and_serve(paths, listen, metrics))


async def _open_and_serve(paths: PlatformPaths, listen: tuple[str, int] | None,
                          metrics: str | None) -> None:
    platform = await Platform.open(paths)
    try:
        host, port = listen or ("0.0.0.0", urlsplit(platform.settings.url).port or 443)
        await serve(platform, host, port, metrics)
    finally:
        await platform.close()
