"""The session key's path end to end on loopback: Node (handshake) -> PeerKeysUpdated ->
ConnectionManager -> DataPlane.apply -> the compiled install, with the peer's certified identity.

Two AgentConnections (enclave.agent.wiring) each own a compiled DataPlane whose native rx thread
reads their real UDP socket on 127.0.0.1; a socketpair stands in for each TAP, so a frame written
into A's "TAP" comes out of B's, sealed and opened by the native loops.  The handshake itself
reaches the Nodes through the punt socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import pytest

from enclave.agent.wiring import AgentConnections
from enclave.cert import SystemIdentity
from enclave.cert import sign as ed_sign
from enclave.discovery import Candidate, CandidateKind, PathAddr, Transport
from enclave.discovery.candidates import NatBehaviour
from enclave.discovery.introduction import Introduction
from enclave.proto.handshake import LocalCredentials
from tests.support.fd_tap import FdTap
from tests.support.pki import Pki
from tests.support.wait import wait_for_async

engine = pytest.importorskip("enclave.dataplane.engine")

LO = "127.0.0.1"


@dataclass
class Side:
    name: str
    ident: SystemIdentity
    der: bytes
    cm: AgentConnections
    dp: engine.DataPlane
    tap: socket.socket  # our end of the stand-in TAP
    udp_port: int


def side(pki: Pki, name: str, stack: AsyncExitStack) -> Side:
    key, der, _serial = pki.issue(name)
    ident = pki.validate(der)
    assert ident is not None
    creds = LocalCredentials(name, der, lambda m: ed_sign(key, m), 0, ident.public_key)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    theirs.setblocking(False)  # the data plane's end, non-blocking like a TAP fd
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((LO, 0))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind((LO, 0))
    tcp_port = tcp.getsockname()[1]
    tcp.close()
    for s in (ours, theirs, udp):
        stack.callback(s.close)
    dp = engine.DataPlane(FdTap(theirs.fileno()), udp, offload=False, max_peers=4)  # type: ignore[arg-type]
    cm = AgentConnections(creds, pki.validate, udp_sock=udp, tcp_port=tcp_port, dp=dp,
                          cipher="chacha20poly1305")
    ours.settimeout(5)
    return Side(name, ident, der, cm, dp, ours, udp.getsockname()[1])


def intro(peer: Side) -> Introduction:
    cand = Candidate(PathAddr(Transport.UDP, LO, peer.udp_port), CandidateKind.PRIVATE)
    return Introduction(peer=peer.name, cert_der=peer.der, candidates=(cand,),
                        nat=NatBehaviour.UNKNOWN, punch_at=0.0, relay=None, relay_ticket=None)


@asynccontextmanager
async def pair() -> AsyncIterator[tuple[Side, Side]]:
    pki = Pki()
    async with AsyncExitStack() as stack:
        a, b = side(pki, "KPATHA", stack), side(pki, "KPATHB", stack)
        for s in (a, b):
            await s.cm.start()
            stack.push_async_callback(s.cm.stop)
        a.cm.introduce(intro(b))
        b.cm.introduce(intro(a))
        yield a, b


def frame(dst: Side, src: Side, payload: bytes) -> bytes:
    return dst.ident.mac + src.ident.mac + b"\x88\xb5" + payload


def test_keys_reach_the_compiled_data_plane_with_the_certified_identity() -> None:
    async def body() -> None:
        async with pair() as (a, b):
            await wait_for_async(lambda: a.dp.native.slots() and b.dp.native.slots(), 10,
                                 what="sessions installed in both data planes")
            [slot] = a.dp.native.slots()
            assert a.dp.native.identity(slot) == {
                "ip4": str(b.ident.overlay_ip), "ip6": [str(b.ident.overlay_ip6)],  # derived
                "routes": []}
            await wait_for_async(lambda: (a.cm.peer(b.name) or {}).get("state") == "connected",
                                 10, what="A connected")
            # a frame from A's TAP to B's MAC crosses sealed by A's loops, opened by B's
            sent = frame(b, a, b"over the compiled path")
            a.tap.send(sent)
            got = await asyncio.to_thread(b.tap.recv, 2048)
            assert got == sent
            assert b.dp.peer_counters(a.name)["rx_frames"] >= 1
            # closing the session removes the peer from the data plane (no keys: removal)
            a.cm.withdraw(b.name, "test")
            await wait_for_async(lambda: not a.dp.native.slots(), 5,
                                 what="A's data plane emptied")

    asyncio.run(asyncio.wait_for(body(), 30))
