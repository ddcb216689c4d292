"""An agent introduced to 40 peers at once registers every relay channel (RelayServer on
loopback with its native forwarder; real RelayClients on their own UDP sockets).

    A (one socket, 40 channels) --40 x REGISTER--> relay --CHALLENGE--> A --40 x REGISTER(cookie)
    peer i (own socket) --REGISTER / cookie--> relay            (the other side of each pair)
    then: DATA from A on each channel reaches peer i through the thread enclave-relay
"""

from __future__ import annotations

import asyncio
import socket
import time

from enclave.agent.relay_client import RelayClient
from enclave.platform.relay import RelayCore, RelayServer, mint_ticket
from tests.support.wait import wait_for_async

LO = "127.0.0.1"
KEY = bytes(range(32))
PEERS = 40


class End:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LO, 0))
        self.sock.setblocking(False)
        self.rc = RelayClient()
        self.registered: set[str] = set()
        self.data: list[tuple[str, bytes]] = []

    def send(self, out: list[tuple[bytes, tuple[str, int]]]) -> None:
        for data, dst in out:
            self.sock.sendto(data, dst)

    def pump(self) -> None:
        """Take what arrived; answer challenges; send due retries and refreshes."""
        while True:
            try:
                data, src = self.sock.recvfrom(70000)
            except BlockingIOError:
                break
            r = self.rc.receive(data, (str(src[0]), int(src[1])), time.time())
            if r is None:
                continue
            if r.kind in ("registered", "refreshed"):
                self.registered.add(r.peer)
            elif r.kind == "send":
                self.send(r.send)
            elif r.kind == "data":
                self.data.append((r.peer, r.message))
        self.send(self.rc.due(time.time()))


def _name(i: int) -> str:
    return f"PEER{i:03d}"


async def _forty() -> None:
    server = RelayServer(RelayCore(KEY))
    relay = await server.start(LO, 0)
    a = End("AGENTA")
    peers = [End(_name(i)) for i in range(PEERS)]
    ends = [a, *peers]
    try:
        exp = int(time.time()) + 600
        for p in peers:  # the introductions arrive together
            a.send(a.rc.add(p.name, relay, mint_ticket(KEY, a.name, p.name, exp), time.time()))
            p.send(p.rc.add(a.name, relay, mint_ticket(KEY, p.name, a.name, exp), time.time()))

        def done() -> bool:
            for e in ends:
                e.pump()
            return len(a.registered) == PEERS and all(p.registered for p in peers)

        await wait_for_async(done, 60.0, what="every channel registered")
        fwd = server.forwarder
        assert fwd is not None and len(fwd) == 2 * PEERS
        for p in peers:  # each channel forwards to its own peer, in the native thread
            path = a.rc.path_for(p.name)
            assert path is not None
            wrapped = a.rc.wrap(b"to " + p.name.encode(), path)
            assert wrapped is not None
            a.send([wrapped])

        def delivered() -> bool:
            for p in peers:
                p.pump()
            return all(p.data for p in peers)

        await wait_for_async(delivered, 30.0, what="DATA at every peer")
        assert all(p.data == [(a.name, b"to " + p.name.encode())] for p in peers)
        assert server.python_data == 0
    finally:
        server.close()
        for e in ends:
            e.sock.close()


def test_forty_introductions_at_once_all_register_and_forward() -> None:
    asyncio.run(asyncio.wait_for(_forty(), 120))
