"""Test support: agents built around real ConnectionManagers, certified by tests.support.pki.Pki.

Agents get each other's Introduction directly (no control channel): `introduce_pair(a, ca, b, cb)`.
Each agent's sockets may live in a netlab namespace (`sock_factory`), so many agents run in one
process and one event loop while their traffic crosses real NATs.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from enclave.agent.connections import ConnectionManager
from enclave.cert import sign as ed_sign
from enclave.cert.keys import public_key_raw
from enclave.discovery import Candidate, NatBehaviour, PathAddr
from enclave.discovery.introduction import Introduction
from enclave.platform.relay import mint_ticket
from enclave.proto.handshake import LocalCredentials
from enclave.proto.wire import CAP_AES256GCM_HW
from tests.support.pki import Pki
from tests.support.wait import wait_for_async

SockFactory = Callable[[int, int], socket.socket]


def plain_socket(family: int, kind: int) -> socket.socket:
    return socket.socket(family, kind)


@dataclass
class Agent:
    name: str
    cm: ConnectionManager
    cert: bytes
    serial: int
    udp_port: int
    tcp_port: int
    frames: list[tuple[str, bytes]] = field(default_factory=list)
    unhandled: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)


def make_agent(
    pki: Pki,
    name: str,
    *,
    bind: str = "127.0.0.1",
    udp_port: int = 0,
    tcp_port: int = 0,
    sock_factory: SockFactory = plain_socket,
    local_nat: NatBehaviour = NatBehaviour.UNKNOWN,
) -> Agent:
    key, der, serial = pki.issue(name)
    creds = LocalCredentials(
        name=name, cert_der=der, sign=lambda data: ed_sign(key, data), caps=CAP_AES256GCM_HW,
        public_key=public_key_raw(key.public_key()),
    )
    udp = sock_factory(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    udp.bind((bind, udp_port))
    if tcp_port == 0:  # find a free TCP port (the listener and connectors share it)
        probe = sock_factory(socket.AF_INET, socket.SOCK_STREAM)
        probe.bind((bind, 0))
        tcp_port = probe.getsockname()[1]
        probe.close()
    cm = ConnectionManager(
        creds,
        pki.validate,
        udp_sock=udp,
        tcp_port=tcp_port,
        local_nat=local_nat,
        tcp_socket_factory=lambda: sock_factory(socket.AF_INET, socket.SOCK_STREAM),
        tcp_bind_host=bind,
        udp_socket_factory=lambda family: sock_factory(family, socket.SOCK_DGRAM),
    )
    agent = Agent(name, cm, der, serial, udp.getsockname()[1], tcp_port)
    cm.on_data(lambda peer, frame: agent.frames.append((peer, frame)))
    cm.on_unhandled(lambda data, addr: agent.unhandled.append((data, addr)))
    return agent


def intro_for(
    peer: Agent,
    candidates: list[Candidate],
    *,
    nat: NatBehaviour = NatBehaviour.UNKNOWN,
    punch_in: float = 0.2,
    relay: PathAddr | None = None,
    relay_key: bytes | None = None,
    me: str | None = None,
    punch_at: float | None = None,
) -> Introduction:
    """What the platform would tell `me` about `peer` (ticket: `me` may relay to `peer`)."""
    ticket = None
    if relay is not None and relay_key is not None and me is not None:
        ticket = mint_ticket(relay_key, me, peer.name, int(time.time()) + 600)
    return Introduction(
        peer=peer.name,
        cert_der=peer.cert,
        candidates=tuple(candidates),
        nat=nat,
        punch_at=time.time() + punch_in if punch_at is None else punch_at,
        relay=relay,
        relay_ticket=ticket,
    )


def introduce_pair(
    a: Agent, a_cands: list[Candidate], b: Agent, b_cands: list[Candidate], **kw: Any
) -> None:
    """What the platform does on mutual intent: tell a about b (reachable at b_cands) and b
    about a (at a_cands); kw (nat, punch_in / punch_at, relay + relay_key) goes to both."""
    a.cm.introduce(intro_for(b, b_cands, me=a.name, **kw))
    b.cm.introduce(intro_for(a, a_cands, me=b.name, **kw))


def connected(a: Agent, b: Agent) -> bool:
    pa, pb = a.cm.peer(b.name), b.cm.peer(a.name)
    return (
        pa is not None
        and pb is not None
        and pa["state"] == "connected"
        and pb["state"] == "connected"
    )


async def exchange(a: Agent, b: Agent, n: int = 3, timeout: float = 3.0) -> bool:
    """Send n authenticated test frames each way through Node.send_data; True if all arrive."""
    want_b = [(a.name, b"%s->%s #%d" % (a.name.encode(), b.name.encode(), i)) for i in range(n)]
    want_a = [(b.name, b"%s->%s #%d" % (b.name.encode(), a.name.encode(), i)) for i in range(n)]
    for (_, fa), (_, fb) in zip(want_b, want_a, strict=True):
        a.cm.send_data(b.name, fa)
        b.cm.send_data(a.name, fb)
    try:
        await wait_for_async(
            lambda: all(x in b.frames for x in want_b) and all(x in a.frames for x in want_a),
            timeout,
            what=f"{n} frames each way between {a.name} and {b.name}",
        )
    except AssertionError:
        return False
    return True
