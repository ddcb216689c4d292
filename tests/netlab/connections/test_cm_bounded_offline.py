"""Real ConnectionManagers on loopback: "offline" from the platform is a hint, not a kill; the
per-peer address table and the TCP connect-failure table stay bounded.

    agent A 127.0.0.1:ua  <--- UDP --->  agent B 127.0.0.1:ub
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from enclave.agent import transport_tcp
from enclave.agent.transport_tcp import TcpTransport
from enclave.discovery import Candidate, CandidateKind, PathAddr, Transport
from tests.support.cm_agent import Agent, connected, exchange, intro_for, introduce_pair, make_agent
from tests.support.pki import Pki
from tests.support.wait import wait_for_async

LO = "127.0.0.1"


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 30))


def udp_cand(a: Agent) -> Candidate:
    return Candidate(PathAddr(Transport.UDP, LO, a.udp_port), CandidateKind.PRIVATE)


@asynccontextmanager
async def _pair() -> AsyncIterator[tuple[Agent, Agent]]:
    """Agents a and b connected over UDP on loopback; both stopped when the block ends."""
    pki = Pki()
    a, b = make_agent(pki, "AAAAA"), make_agent(pki, "BBBBB")
    try:
        for x in (a, b):
            await x.cm.start()
        introduce_pair(a, [udp_cand(a)], b, [udp_cand(b)])
        await wait_for_async(lambda: connected(a, b), 5, what="a <-> b connected")
        yield a, b
    finally:
        for x in (a, b):
            await x.cm.stop()


def test_offline_is_a_hint_and_intent_withdrawal_ends_the_session() -> None:
    async def body() -> None:
        async with _pair() as (a, b):
            forgotten: list[str] = []
            b.cm.on_forgotten(forgotten.append)
            since = b.cm.peer(a.name)["connected_at"]  # type: ignore[index]
            assert b.cm.withdraw(a.name, "offline") is False  # kept
            assert await exchange(a, b)
            assert connected(a, b) and b.cm.peer(a.name)["connected_at"] == since  # type: ignore[index]
            # the peer itself ends it (its intent went away): b forgets a, and does not try
            # to reconnect to a peer the platform called offline
            assert a.cm.withdraw(b.name, "intent") is True
            await wait_for_async(lambda: b.cm.peer(a.name) is None, 5,
                                 what="b forgets a once the kept session ends")
            assert forgotten == [a.name]  # the daemon drops its own state for a then

    run(body)


def test_other_withdrawals_end_the_session_at_once() -> None:
    async def body() -> None:
        async with _pair() as (a, b):
            assert b.cm.withdraw(a.name, "revoked") is True
            assert b.cm.peer(a.name) is None
            await wait_for_async(lambda: a.cm.peer(b.name)["state"] != "connected", 5,  # type: ignore[index]
                                 what="a sees the session closed")

    run(body)


def test_address_table_bounded_across_reintroductions() -> None:
    async def body() -> None:
        async with _pair() as (a, b):
            before = next(p for p in a.cm.peers() if p["name"] == b.name)
            assert before["overlay_ip"]  # the certified overlay IP of the session
            for port in range(20000, 20200):  # the platform re-introduces b at new addresses
                a.cm.introduce(intro_for(b, [Candidate(PathAddr(Transport.UDP, LO, port),
                                                       CandidateKind.PUBLIC)], me=a.name))
            assert len(a.cm._addr_peer) <= 4  # the table under test
            assert connected(a, b)  # the live session is untouched
            after = next(p for p in a.cm.peers() if p["name"] == b.name)
            assert after["overlay_ip"] == before["overlay_ip"]  # and still shown

    run(body)


def test_tcp_connect_failures_are_pruned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport_tcp, "RETRY_AFTER", 0.0)
    ports = []
    for _ in range(30):  # closed loopback ports: every connect is refused
        s = socket.socket()
        s.bind((LO, 0))
        ports.append(s.getsockname()[1])
        s.close()

    async def body() -> None:
        probe = socket.socket()
        probe.bind((LO, 0))
        port = probe.getsockname()[1]
        probe.close()
        tcp = TcpTransport(port, lambda data, addr: None, bind_host=LO)
        await tcp.start()
        try:
            for p in ports:
                tcp.send(b"\x01\x00\x00\x00frame", PathAddr(Transport.TCP, LO, p))
            await wait_for_async(lambda: tcp.connect_failures >= len(ports), 10,
                                 what="every connect refused")
            assert len(tcp._failed_at) <= 2  # the table under test
        finally:
            await tcp.close()

    run(body)
