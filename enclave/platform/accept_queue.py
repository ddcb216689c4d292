"""The API listener's accept loop: connections wait in the kernel's listen backlog while the node
is full, instead of being accepted only to be closed.

    agent --TCP--> kernel backlog (BACKLOG, FIFO; SYNs beyond it are retried by the client's
         |         kernel, which costs the node nothing)
         |  QueueingSite._accept_loop: accepts only while every gate has room
         |      ConnectionLimits.has_room()  unauthenticated connections below their cap
         |      Admission.has_room()         agent requests in flight below their limit
         v
    GuardedSocket.accept()   per-address cap: over it, held for a place of that address
         |                   (address_queue.py: AddressQueue), or closed when none can be held
         v
    TLS handshake (at most handshake_timeout) -> aiohttp's web.Server (HTTP, WebSocket)

Why: the thousands of agents of a node that went away arrive at the others within seconds. A
node that accepts them all and closes those over its caps (or answers 503 after the TLS
handshake) turns each refusal into a retry after a backoff: the node's (and, on one machine, the
agents') CPU goes to refusals and the welcomes slow to a trickle (enclave bench platform:
27,000 refused connections for 5,000 agents, 50 welcomes a second against 300 at the start).
Waiting in the backlog costs nothing, keeps arrival order, and the node works at full speed;
an agent that waits longer than its connect timeout tries again (its other nodes first), and
the connection it left behind is closed unanswered when its turn comes (abandoned(): its FIN
is there already), so no TLS handshake is spent on a client that has gone.

The gates call back (their ``on_room`` lists) whenever a connection or request leaves them; the
loop then looks again. Only public asyncio calls are used (sock_accept, connect_accepted_socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Sequence
from ssl import SSLContext
from typing import Protocol

from aiohttp import web

from enclave.logsafe import RejectionLog
from enclave.platform.address_queue import AddressQueue, abandoned
from enclave.platform.frontdoor import BACKLOG, GuardedSocket

log = logging.getLogger("enclave.platform.frontdoor")
ACCEPT_RETRY = 1.0  # seconds before accepting again after an error such as EMFILE
HOLD_PER_ADDRESS = 4  # connections held per source address, in per-address caps


class Gate(Protocol):
    """Something that bounds what the node works on at once."""

    on_room: list[Callable[[], None]]

    def has_room(self) -> bool: ...


class QueueingSite(web.BaseSite):
    """An aiohttp site on a GuardedSocket that accepts only while every gate has room, with a
    bound on the TLS handshake."""

    __slots__ = (
        "_abandoned",
        "_errors",
        "_gates",
        "_handshake_timeout",
        "_handshakes",
        "_loop_task",
        "_name",
        "_room",
        "_sock",
        "held",
    )

    def __init__(self, runner: web.BaseRunner, sock: GuardedSocket, *, ssl_context: SSLContext,
                 handshake_timeout: float, gates: Sequence[Gate] = ()) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=BACKLOG)
        self._sock = sock
        self._gates = (sock.limits, *gates)
        self._handshake_timeout = handshake_timeout
        self._room = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self._errors = RejectionLog(log)
        self._abandoned = 0  # connections whose client gave up in the backlog
        limits = sock.limits
        self.held = AddressQueue(sock, self._serve,
                                 per_address=HOLD_PER_ADDRESS * limits.max_per_address,
                                 total=limits.max_unauth, timeout=handshake_timeout)
        sock.hold = self.held.hold
        host, port = sock.getsockname()[:2]
        self._name = f"https://{host}:{port}"

    @property
    def abandoned(self) -> int:
        """Connections whose client gave up while they waited (in the backlog, or held for a
        place of their address): closed unanswered."""
        return self._abandoned + self.held.abandoned

    @property
    def name(self) -> str:
        return self._name

    def has_room(self) -> bool:
        return all(gate.has_room() for gate in self._gates)

    async def start(self) -> None:
        await super().start()
        for gate in self._gates:
            gate.on_room.append(self._room.set)
        self._sock.limits.on_room.append(self.held.wake)
        self._loop_task = asyncio.get_running_loop().create_task(self._accept_loop())

    async def stop(self) -> None:
        for gate in self._gates:
            with contextlib.suppress(ValueError):
                gate.on_room.remove(self._room.set)
        with contextlib.suppress(ValueError):
            self._sock.limits.on_room.remove(self.held.wake)
        self.held.close()
        tasks = [t for t in (self._loop_task, *self._handshakes) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sock.close()
        await super().stop()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.has_room():
                self._room.clear()
                await self._room.wait()
            try:
                conn, _addr = await loop.sock_accept(self._sock)
            except OSError as exc:  # out of file descriptors, or the like: try again soon
                self._errors.note("accept", "%s: accept failed: %s", self._name, exc)
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            if abandoned(conn):
                self._abandoned += 1
                conn.close()
                continue
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        task = asyncio.get_running_loop().create_task(self._handshake(conn))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket) -> None:
        """TLS, then the connection belongs to aiohttp's server; a failed or timed-out
        handshake closes the socket (and so gives its place back)."""
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                server, conn, ssl=self._ssl_context, ssl_handshake_timeout=self._handshake_timeout)
        except (OSError, TimeoutError):
            conn.close()
