"""The relay refuses systems in the CRL: a revoked system's relay tickets stop working within
seconds, though they have not expired (a real platform on loopback with its relay).

    X, Y enrolled, mutual intent; X's ControlClient (driven here) gets Y's introduction with
    the relay's address and X's ticket "X may relay to Y"
    X's RelayClient --REGISTER--> relay: REGISTERED          (before)
    `enclave platform systems revoke Y`
    X's RelayClient --REGISTER--> relay: silence              (within seconds)
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from enclave.agent.relay_client import RelayClient
from tests.support.control_client import mutual_pair, relay_intros, relay_ticket
from tests.support.platform import Platform
from tests.support.proc import free_port
from tests.support.relay import register_over

LO = "127.0.0.1"


def _registers(rc: RelayClient, peer: str, relay: tuple[str, int], ticket: bytes,
               sock: socket.socket) -> bool:
    """REGISTER (answering the cookie challenge) until REGISTERED, or False on silence."""
    return register_over(sock, rc, peer, relay, ticket, tries=6) is not None


def test_revoked_systems_tickets_stop_working(tmp_path: Path) -> None:
    relay_port = free_port()
    plat = Platform.loopback(tmp_path, ENCLAVE_PLATFORM_RELAY=f"{LO}:{relay_port}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LO, 0))
    sock.settimeout(0.5)
    try:
        x, y, xname, yname = mutual_pair(plat, tmp_path)
        msg, _ = asyncio.run(asyncio.wait_for(relay_intros(x, y, xname, yname), 30))
        relay = msg["relay"]
        assert isinstance(relay, dict) and relay["host"] == LO and relay["port"] == relay_port
        ticket = relay_ticket(msg)
        assert _registers(RelayClient(), yname, (LO, relay_port), ticket, sock)

        res = plat.cli("systems", "revoke", yname)
        assert res.returncode == 0, res.stderr
        deadline = time.monotonic() + 15
        while _registers(RelayClient(), yname, (LO, relay_port), ticket, sock):
            assert time.monotonic() < deadline, "the relay still registers a revoked peer"
            time.sleep(0.5)
    finally:
        sock.close()
        plat.stop()
