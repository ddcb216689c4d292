"""The platform's front door on loopback, against a real `enclave platform serve` process
started with a soft limit of 1024 open files (it raises its own limit and caps connections):

* a stranger (127.0.0.2) opens a thousand TLS connections and leaves them idle; the platform
  admits at most ENCLAVE_PLATFORM_MAX_PER_ADDRESS of them at once, holds HOLD_PER_ADDRESS times
  as many more for a place of that address (they get one when an admitted one is closed for
  being idle, or are closed after the idle timeout) and closes the rest at once, while an agent
  (127.0.0.1) enrols, connects and stays connected;
* the admitted idle TLS connections, and a TCP connection that never starts its TLS handshake,
  are closed by the platform after the idle timeout (the old server kept them for an hour);
* a client that keeps sending a request's headers a byte at a time is closed UNAUTH_LIFETIMES
  idle timeouts after it connected, while the agent's authenticated control channel, older than
  that, stays (it is not aged out, and the agent never had to reconnect), and so does an admin's
  keep-alive connection that made an authenticated request;
* the refusals are logged within a budget (not a line per connection).
"""

from __future__ import annotations

import asyncio
import http.client
import resource
import ssl
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from enclave.platform.accept_queue import HOLD_PER_ADDRESS
from enclave.platform.frontdoor import UNAUTH_LIFETIMES
from tests.support.agent import AgentProc
from tests.support.platform import Platform
from tests.support.proc import free_port, local_popen, local_run
from tests.support.wait import wait_for

STRANGER = "127.0.0.2"
CONNECTIONS = 1000
PER_ADDRESS = 16
IDLE = 2.0  # seconds: ENCLAVE_PLATFORM_IDLE_TIMEOUT for this platform


def _low_fd_popen(cmd: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
    """The platform starts with a soft limit of 1024 files (the usual default)."""
    return local_popen(["prlimit", "--nofile=1024:", "--", *cmd], **kw)


def _raise_own_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


async def _stranger(port: int) -> tuple[list[asyncio.StreamWriter], list[asyncio.StreamReader],
                                        int]:
    """CONNECTIONS TLS connections from STRANGER, left idle: (writers, readers, refused)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, local_addr=(STRANGER, 0)), 30)

    results = await asyncio.gather(*(one() for _ in range(CONNECTIONS)), return_exceptions=True)
    opened = [r for r in results if isinstance(r, tuple)]
    return [w for _r, w in opened], [r for r, _w in opened], len(results) - len(opened)


async def _slow_headers(port: int, seconds: float) -> bool:
    """Send a request's headers one byte per 0.2 s; True when the platform closes first."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   local_addr=("127.0.0.4", 0))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        for byte in b"GET /v1/ca HTTP/1.1\r\nX-Slow: " + b"a" * 10_000:
            if loop.time() > deadline:
                return False
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except (ConnectionError, ssl.SSLError):
                return True
            if reader.at_eof():
                return True
            await asyncio.sleep(0.2)
        return False
    finally:
        writer.close()


def _admin_keepalive(plat: Platform, seconds: float) -> int:
    """Admin requests on one keep-alive connection, one per IDLE / 2, for ``seconds``; how
    many were answered 200 on that same connection (it raises if the platform closed it)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", plat.port, context=ctx, timeout=10,
                                       source_address=("127.0.0.5", 0))
    answered, sock, deadline = 0, None, time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            conn.request("GET", "/v1/admin/keys",
                         headers={"Authorization": f"Bearer {plat.admin_token}"})
            reply = conn.getresponse()
            reply.read()
            assert reply.status == 200
            assert sock is None or conn.sock is sock, "the admin connection was replaced"
            sock = conn.sock
            answered += 1
            time.sleep(IDLE / 2)
    finally:
        conn.close()
    return answered


async def _closed_by_peer(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), timeout) == b""
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def test_idle_strangers_do_not_stop_an_agent(tmp_path: Path) -> None:
    _raise_own_limit(CONNECTIONS + 512)
    plat = Platform.init(tmp_path, "127.0.0.1", free_port(), local_run, _low_fd_popen)
    plat.extra_env.update({"ENCLAVE_DISCOVERY_PORTS": f"{free_port()},{free_port()}",
                           "ENCLAVE_PLATFORM_IDLE_TIMEOUT": str(IDLE),
                           "ENCLAVE_PLATFORM_MAX_PER_ADDRESS": str(PER_ADDRESS)})
    agent = AgentProc.local(tmp_path, "door")
    try:
        plat.start()

        async def scenario() -> None:
            writers, readers, refused = await _stranger(plat.port)
            try:
                most = PER_ADDRESS * (1 + HOLD_PER_ADDRESS)  # admitted, then the held ones
                assert len(writers) <= most and refused >= CONNECTIONS - most
                # a TCP connection that never starts TLS (from yet another address)
                raw_reader, raw_writer = await asyncio.open_connection(
                    "127.0.0.1", plat.port, local_addr=("127.0.0.3", 0))
                # meanwhile an agent enrols and connects
                await asyncio.to_thread(agent.enrol, await asyncio.to_thread(plat.token))
                await asyncio.to_thread(agent.up)
                await asyncio.to_thread(
                    wait_for, lambda: agent.status()["platform"]["state"] == "connected",
                    20, what="agent connected despite the stranger")
                # every idle connection is closed by the platform after the idle timeout
                closed = await asyncio.gather(*(_closed_by_peer(r, IDLE + 15)
                                                for r in [*readers, raw_reader]))
                assert all(closed), f"{closed.count(False)} idle connections still open"
                raw_writer.close()
                lifetime = UNAUTH_LIFETIMES * IDLE
                admin = asyncio.get_running_loop().run_in_executor(
                    None, _admin_keepalive, plat, lifetime + 2)
                assert await _slow_headers(plat.port, lifetime + 15), "slow client kept"
                assert await admin > lifetime / (IDLE / 2)  # outlived the lifetime
            finally:
                for w in writers:
                    w.close()

        asyncio.run(scenario())
        # the agent's authenticated control channel outlived the unauthenticated lifetime
        assert agent.status()["platform"]["state"] == "connected"
        assert plat.proc is not None and plat.proc.poll() is None
        log = plat.log()
        assert "refused a connection from 127.0.0.2" in log
        assert log.count("refused a connection") < 100  # bounded, not one per connection
        assert "Traceback" not in log
        assert log.count(f"control: {agent.name} online") == 1  # never cut, never reconnected
    finally:
        agent.down()
        plat.stop()
