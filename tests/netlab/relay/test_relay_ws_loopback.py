"""The relay over TLS against a real platform on loopback (its relay WebSocket, real TLS with the
pinned key, tickets from real introductions).

    X, Y enrolled with mutual intent; their control clients get each other's introduction with
    a ticket; RelayTlsClient X and Y register on wss://platform/v1/relay and a batch crosses.
    A forged ticket gets silence; a malformed batch is forwarded as it is (the relay never
    looks inside) and dropped whole by the receiving agent; a wrong pin never connects;
    the --relay-tls extra listener serves the same relay.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from enclave.agent.relay_tls import RelayTlsClient
from enclave.discovery.candidates import PathAddr, Transport
from enclave.proto.relay_batch import RELAY_WS_PATH, pack_batch
from enclave.proto.wire import MSG_RELAY_DATA, MSG_RELAY_REGISTER, pack_relay_header
from tests.support.control_client import mutual_pair, relay_intros, relay_ticket, until
from tests.support.platform import Platform
from tests.support.proc import free_port

LO = "127.0.0.1"


class _End:
    def __init__(self, url: str, pin: str) -> None:
        self.got: list[tuple[bytes, PathAddr]] = []
        self.registered: list[str] = []
        self.rc = RelayTlsClient(url, pin, LO, lambda m, p: self.got.append((m, p)),
                                 lambda peer, p: self.registered.append(peer))


async def _exchange(url: str, pin: str, xname: str, yname: str, tx: bytes, ty: bytes) -> None:
    ex, ey = _End(url, pin), _End(url, pin)
    try:
        ex.rc.add(yname, tx)
        ey.rc.add(xname, ty)
        await until(lambda: ex.registered and ey.registered, timeout=15, what="both registered")
        path = ex.rc.path_for(yname)
        assert path is not None and path.transport is Transport.RELAY_TLS
        msgs = [bytes([i]) * (100 + i) for i in range(50)]
        for m in msgs:
            assert ex.rc.send(m, path)
        await until(lambda: len(ey.got) >= len(msgs), what="the batch at Y")
        assert [m for m, _ in ey.got] == msgs  # in order, every datagram
        back = ey.rc.path_for(xname)
        assert back is not None and all(p == back for _, p in ey.got)
        # a malformed batch: the relay forwards it, Y drops it whole
        link = ex.rc._link
        assert link is not None
        dropped = ey.rc.dropped
        assert link.send(pack_relay_header(MSG_RELAY_DATA, path.port), b"\x00\x09short")
        await until(lambda: ey.rc.dropped > dropped, what="Y dropping the malformed batch")
        assert len(ey.got) == len(msgs)
    finally:
        await ex.rc.close()
        await ey.rc.close()


async def _silence(url: str, pin: str, ticket: bytes) -> None:
    """A forged ticket and garbage on a raw WebSocket: no reply at all."""
    ex = _End(url, pin)  # for its pinned TLS context
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(ex.rc.ws_url, ssl=ex.rc._ctx) as ws:
        forged = ticket[:-1] + bytes([ticket[-1] ^ 1])
        await ws.send_bytes(pack_relay_header(MSG_RELAY_REGISTER, 9) + forged)
        await ws.send_bytes(b"\xff" * 40)
        await ws.send_bytes(pack_relay_header(MSG_RELAY_DATA, 9) + pack_batch([b"x"]))
        try:
            msg = await ws.receive(timeout=2.0)
        except TimeoutError:
            return
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg


async def _wrong_pin(url: str, ticket: bytes, yname: str) -> RelayTlsClient:
    rc = RelayTlsClient(url, "00" * 32, LO, lambda m, p: None, lambda peer, p: None)
    rc.add(yname, ticket)
    await asyncio.sleep(2.0)  # a while to connect in, had the pin been taken ...
    # ... and the refused TLS handshake itself (a loaded platform may take longer than that)
    await until(lambda: rc.last_error, timeout=30, what="the pinned handshake to fail")
    assert rc.connects == 0 and not rc.registered(yname)
    assert rc.last_error is not None and "does not match the pin" in rc.last_error
    await rc.close()
    return rc


def test_relay_over_tls_on_a_real_platform(tmp_path: Path) -> None:
    extra = free_port()
    plat = Platform.loopback(tmp_path, ENCLAVE_PLATFORM_RELAY=f"{LO}:{free_port()}",
                             ENCLAVE_PLATFORM_RELAY_TLS=f"{LO}:{extra}")
    try:
        x, y, xname, yname = mutual_pair(plat, tmp_path)
        rec = x.load_enrolment()
        mx, my = asyncio.run(relay_intros(x, y, xname, yname))
        tx, ty = relay_ticket(mx), relay_ticket(my)
        asyncio.run(_exchange(rec.url, rec.pin, xname, yname, tx, ty))
        asyncio.run(_silence(rec.url, rec.pin, tx))
        asyncio.run(_wrong_pin(rec.url, tx, yname))
        # the extra listener (--relay-tls / ENCLAVE_PLATFORM_RELAY_TLS): the same relay
        asyncio.run(_exchange(f"https://{LO}:{extra}", rec.pin, xname, yname, tx, ty))
        assert RELAY_WS_PATH in plat.log()
    finally:
        plat.stop()
