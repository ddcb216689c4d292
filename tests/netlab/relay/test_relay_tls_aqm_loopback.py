"""The relay over TLS under a standing queue, on loopback: two RelayTlsClients (the agents'
end) through the platform's relay WebSocket (serve_ws), real TLS with the pinned key.

    X --send_frames--> [X's queue: CoDel] --TLS--> platform relay --TLS--> Y (reads slowly)

Both ends' TCP sockets carry TCP_NOTSENT_LOWAT.  While Y reads in short pulses the queue at X
stands and X drops bulk DATA datagrams (counted under drops["codel"]), never a small one or a
non-DATA one; with Y reading normally nothing is lost.  While Y reads nothing the
platform's queue for Y stands and the platform drops bulk datagrams for Y (never small ones)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from aiohttp import web
from cryptography import x509

from enclave.agent.relay_tls import RelayTlsClient
from enclave.agent.relay_tls_aqm import TARGET_NS
from enclave.cert.keys import spki_sha256
from enclave.discovery.candidates import PathAddr
from enclave.platform.relay import mint_ticket, verify_ticket
from enclave.platform.relay_ws import RelayWs, serve_ws
from enclave.proto.relay_batch import RELAY_WS_PATH, pack_batch
from enclave.proto.wire import MSG_DATA
from enclave.wslink import NOTSENT_LOWAT, WsLink
from tests.netlab.relay.test_wslink_loopback import KEY, LO, _serving, _tls, _until

X, Y = "XXXXX", "YYYYY"


class _End:
    def __init__(self, url: str, pin: str) -> None:
        self.got: list[bytes] = []
        self.registered: list[str] = []
        self.rc = RelayTlsClient(url, pin, LO, lambda m, p: self.got.append(m),
                                 lambda peer, p: self.registered.append(peer))

    def link(self) -> WsLink:
        link = self.rc._link
        assert link is not None and link.transport is not None
        return link


def _lowat(link: WsLink) -> int:
    assert link.transport is not None
    sock = link.transport.get_extra_info("socket")
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT))


def _frames(seq: int) -> tuple[bytes, list[bytes]]:
    """A batch as the data plane sends it: 8 bulk DATA datagrams, 3 small DATA ones (ACK-sized)
    and one long non-DATA one (a handshake), each tagged kind | sequence."""
    def tag(i: int) -> bytes:
        return (seq * 16 + i).to_bytes(4, "big")

    msgs = ([bytes([MSG_DATA]) + b"B" + tag(i) + bytes(1200) for i in range(8)]
            + [bytes([MSG_DATA]) + b"s" + tag(8 + i) + bytes(40) for i in range(3)]
            + [bytes([1]) + b"h" + tag(11) + bytes(1200)])
    return pack_batch(msgs), msgs


def _kinds(msgs: list[bytes]) -> dict[bytes, int]:
    out = {b"B": 0, b"s": 0, b"h": 0}
    for m in msgs:
        out[m[1:2]] += 1
    return out


def test_standing_queue_drops_bulk_only_and_none_without_one(tmp_path: Path) -> None:
    server_ctx, _client_ctx = _tls(tmp_path)
    cert = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes())
    pin = spki_sha256(cert)
    relay = RelayWs(lambda raw, now: verify_ticket(KEY, raw, now))

    async def handler(request: web.Request) -> web.StreamResponse:
        return await serve_ws(relay, request)

    async def shutdown(app: web.Application) -> None:
        relay.close_all()

    async def body() -> None:
        app = web.Application()
        app.router.add_get(RELAY_WS_PATH, handler)
        app.on_shutdown.append(shutdown)
        async with _serving(app, server_ctx) as port:
            url = f"https://{LO}:{port}"
            ex, ey = _End(url, pin), _End(url, pin)
            exp = int(time.time()) + 600
            try:
                ex.rc.add(Y, mint_ticket(KEY, X, Y, exp))
                ey.rc.add(X, mint_ticket(KEY, Y, X, exp))
                await _until(lambda: ex.registered and ey.registered, "both registered")
                path = ex.rc.path_for(Y)
                assert isinstance(path, PathAddr)
                # 1. TCP_NOTSENT_LOWAT on the agents' sockets and on the platform's
                assert _lowat(ex.link()) == NOTSENT_LOWAT == _lowat(ey.link())
                served = [c.link for c in relay._conns]
                assert len(served) == 2 and all(_lowat(s) == NOTSENT_LOWAT for s in served)
                # 2. no standing queue (Y reads): every datagram arrives, in order
                sent: list[bytes] = []
                for seq in range(60):
                    batch, msgs = _frames(seq)
                    assert ex.rc.send_frames(batch, path)
                    sent += msgs
                    await asyncio.sleep(0.005)
                await _until(lambda: len(ey.got) == len(sent), "every datagram at Y")
                assert ey.got == sent
                assert ex.rc.dropped == 0 and not any(ex.rc.drops.values())
                # 3. the queue at X stands: the platform reads X's connection only in short
                #    pulses, each after X queued more than the path between them holds and
                #    the batches waited past CoDel's target; until CoDel drops
                ey.got.clear()
                sent.clear()
                ch = ex.rc._by_peer[Y]
                xp = next(c.link.transport for c in relay._conns
                          if any(r.src == X for r in c.channels.values()))
                assert xp is not None
                xp.pause_reading()
                seq = 1000
                bulk0 = relay.dropped_bulk  # (the platform may drop too, for Y: counted)
                for _round in range(300):
                    if ex.rc.drops["codel"]:
                        break
                    while ch.batch_bytes < 2 << 20:  # (MAX_QUEUED_BYTES: 4 MiB)
                        batch, msgs = _frames(seq)
                        assert ex.rc.send_frames(batch, path)
                        sent += msgs
                        seq += 1
                        if not ex.link().paused:
                            await asyncio.sleep(0)  # (written at once: not queued)
                    await asyncio.sleep(2 * TARGET_NS / 1e9)  # they stand past the target
                    xp.resume_reading()
                    while ch.batches:
                        await asyncio.sleep(0)
                    xp.pause_reading()
                xp.resume_reading()
                assert ex.rc.drops["codel"] > 0, "CoDel never dropped under a standing queue"
                def lost3() -> int:
                    return ex.rc.drops["codel"] + relay.dropped_bulk - bulk0

                await _until(lambda: len(ey.got) >= len(sent) - lost3() and not ch.batches,
                             "the rest at Y")
                await asyncio.sleep(0.2)  # (anything more would be a miscount)
                assert ex.rc.drops["queue_full"] == 0 and ex.rc.drops["pending_full"] == 0
                got, put = _kinds(ey.got), _kinds(sent)
                assert got[b"s"] == put[b"s"] and got[b"h"] == put[b"h"]  # none small lost
                assert got[b"B"] == put[b"B"] - lost3() < put[b"B"]
                counters = ex.rc.aqm_counters(Y)  # (enclave status --json: relay_tls_aqm)
                assert counters is not None and counters["kept_small"] > 0
                assert counters["codel_drops"] == ex.rc.drops["codel"]
                rest = iter(sent)
                assert all(m in rest for m in ey.got)  # in order (a subsequence of sent)
                # 4. Y reads nothing: the platform's queue for Y stands, and it drops bulk
                #    datagrams for Y as CoDel says (dropped_bulk); the rest goes
                ey.got.clear()
                sent.clear()
                codel0, bulk0 = ex.rc.drops["codel"], relay.dropped_bulk
                yt = ey.link().transport
                assert yt is not None
                yt.pause_reading()
                to_y = next(c.link for c in relay._conns
                            if any(r.src == Y for r in c.channels.values()))
                while relay.dropped_bulk == bulk0:  # until its queue for Y is over the mark,
                    assert seq < 1_000_000, "the platform never dropped for a full peer"
                    batch, msgs = _frames(seq)  # fast; then a batch at a time while it stands
                    assert ex.rc.send_frames(batch, path)
                    sent += msgs
                    seq += 1
                    await asyncio.sleep(0.01 if to_y.paused else 0)
                yt.resume_reading()

                def lost() -> int:  # (the platform drops until its queue for Y is out)
                    return relay.dropped_bulk - bulk0 + ex.rc.drops["codel"] - codel0

                await _until(lambda: len(ey.got) >= len(sent) - lost() and not ch.batches,
                             "the rest at Y after the platform's drops")
                await asyncio.sleep(0.2)  # (anything more would be a miscount)
                got, put = _kinds(ey.got), _kinds(sent)
                assert got[b"s"] == put[b"s"] and got[b"h"] == put[b"h"]  # none small lost
                assert got[b"B"] == put[b"B"] - lost() and relay.dropped_bulk > bulk0
            finally:
                await ex.rc.close()
                await ey.rc.close()

    asyncio.run(asyncio.wait_for(body(), 120))
