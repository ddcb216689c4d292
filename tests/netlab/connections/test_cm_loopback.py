"""Two real ConnectionManagers on loopback: real UDP/TCP sockets, real certificates, real relay.

agent A 127.0.0.1:ua/ta  <--- UDP / TCP (simultaneous open) --->  agent B 127.0.0.1:ub/tb
        \\                                                         /
         `--- REGISTER / DATA --->  relay 127.0.0.1:r  <---------'
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from enclave.discovery import Candidate, CandidateKind, PathAddr, Transport
from enclave.discovery.paths import GIVE_UP_AFTER
from enclave.platform.relay import RelayCore, RelayServer
from enclave.proto.wire import MSG_RELAY_DATA, pack_relay_header
from tests.support.cm_agent import (
    Agent,
    connected,
    exchange,
    intro_for,
    introduce_pair,
    make_agent,
)
from tests.support.pki import Pki
from tests.support.wait import wait_for_async

LO = "127.0.0.1"


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 30))


def udp_cand(a: Agent, kind: CandidateKind = CandidateKind.PRIVATE) -> Candidate:
    return Candidate(PathAddr(Transport.UDP, LO, a.udp_port), kind)


def tcp_cand(a: Agent) -> Candidate:
    return Candidate(PathAddr(Transport.TCP, LO, a.tcp_port), CandidateKind.PUBLIC)


def dead_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LO, 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


@asynccontextmanager
async def running(*names: str) -> AsyncIterator[list[Agent]]:
    """Started agents with certificates from one CA; stopped on exit."""
    pki = Pki()
    agents = [make_agent(pki, n) for n in names]
    for a in agents:
        await a.cm.start()
    try:
        yield agents
    finally:
        for a in agents:
            await a.cm.stop()


async def connect_udp(a: Agent, b: Agent) -> None:
    """Introduce a and b at their loopback UDP ports; they connect within 5 s."""
    introduce_pair(a, [udp_cand(a)], b, [udp_cand(b)])
    await wait_for_async(lambda: connected(a, b), 5, what="a <-> b connected")


def test_udp_session_data_status_and_rtt() -> None:
    async def body() -> None:
        async with running("AAAAA", "BBBBB") as (a, b):
            await connect_udp(a, b)
            assert await exchange(a, b, 5)
            await wait_for_async(lambda: a.cm.peer(b.name)["rtt_ms"] is not None,  # type: ignore[index]
                                 3, what="an RTT sample")
            pa = a.cm.peer(b.name)
            assert pa is not None
            assert pa["path"] == "lan" and pa["endpoint"] == f"{LO}:{b.udp_port}"
            assert pa["setup_ms"] is not None and 0 < pa["setup_ms"] < 3000
            assert pa["rx_bytes"] > 0 and pa["tx_bytes"] > 0
            assert 0 <= pa["rtt_ms"] < 1000
            assert a.unhandled == [] and b.unhandled == []

    run(body)


def test_tcp_only_simultaneous_open_carries_the_session() -> None:
    async def body() -> None:
        async with running("AAAAA", "BBBBB") as (a, b):
            introduce_pair(a, [tcp_cand(a)], b, [tcp_cand(b)])
            await wait_for_async(lambda: connected(a, b), 8, what="a <-> b connected over TCP")
            assert await exchange(a, b, 5)
            for x, y in ((a, b), (b, a)):
                p = x.cm.peer(y.name)
                assert p is not None and p["path"] == "direct-tcp", p

    run(body)


def test_withdraw_closes_both_sides_and_strangers_get_nothing() -> None:
    async def body() -> None:
        # C: valid certificate, but never introduced to A
        async with running("AAAAA", "BBBBB", "CCCCC") as (a, b, c):
            c.cm.introduce(intro_for(a, [udp_cand(a)]))
            await connect_udp(a, b)
            await asyncio.sleep(1.0)  # C has punched for a while by now
            pc = c.cm.peer(a.name)
            assert pc is not None and pc["state"] != "connected" and pc["rx_bytes"] == 0
            assert a.cm.peer(c.name) is None
            # garbage and relay-typed packets from a non-relay address: not peer traffic
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.sendto(b"\x10\x00\x00\x00hello", (LO, a.udp_port))
            sock.sendto(pack_relay_header(MSG_RELAY_DATA, 1) + b"x" * 40, (LO, a.udp_port))
            sock.sendto(b"\x04\x00\x00\x00" + b"\x00" * 60, (LO, a.udp_port))  # bogus DATA
            sock.close()
            await wait_for_async(lambda: len(a.unhandled) == 2, 2, what="two unhandled datagrams")
            assert a.unhandled[0][0] == b"\x10\x00\x00\x00hello"
            assert await exchange(a, b, 2)  # bad input did not disturb the session
            a.cm.withdraw(b.name, "intent")
            assert a.cm.peer(b.name) is None
            await wait_for_async(
                lambda: (b.cm.peer(a.name) or {}).get("closed_reason") == "remote", 3,
                what="b closed by the remote")
            assert not a.cm.send_data(b.name, b"after withdraw")

    run(body)


@pytest.mark.timeout(60)
def test_no_direct_path_falls_back_to_relay() -> None:
    async def body() -> None:
        key = b"k" * 32
        relay = RelayServer(RelayCore(key))
        rhost, rport = await relay.start(LO, 0)
        raddr = PathAddr(Transport.RELAY, rhost, rport)
        try:
            async with running("AAAAA", "BBBBB") as (a, b):
                # the only direct candidates go nowhere: the relay, registered with the
                # introduction, carries the session while the punch is still trying
                dead = Candidate(PathAddr(Transport.UDP, LO, dead_udp_port()), CandidateKind.PUBLIC)
                introduce_pair(a, [dead], b, [dead], relay=raddr, relay_key=key)
                await wait_for_async(lambda: connected(a, b), 12,
                                     what="a <-> b connected through the relay")
                for x, y in ((a, b), (b, a)):
                    p = x.cm.peer(y.name)
                    assert p is not None and p["path"] == "relay-udp" and p["relay_registered"], p
                    assert p["setup_ms"] < GIVE_UP_AFTER * 1000  # not after the punch gave up
                assert await exchange(a, b, 5)
                assert relay.forwarded >= 10
                assert len(relay.core) == 2
        finally:
            relay.close()

    run(body)


def test_revoked_peer_is_dropped_and_not_readmitted() -> None:
    async def body() -> None:
        async with running("AAAAA", "BBBBB") as (a, b):
            await connect_udp(a, b)
            a.cm.set_revoked({b.serial})
            await wait_for_async(
                lambda: (b.cm.peer(a.name) or {}).get("closed_reason") == "remote", 3,
                what="b closed by the remote")
            assert (a.cm.peer(b.name) or {}).get("state") == "closed"
            assert not a.cm.send_data(b.name, b"to a revoked peer")
            await asyncio.sleep(2.0)  # B reconnects on its own: A must not let it back in
            assert not connected(a, b)

    run(body)
