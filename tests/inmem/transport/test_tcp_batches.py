"""Two TCP data ports on loopback with the compiled data plane's batching turned on
(enclave.agent.transport_tcp, on_frames): a TX batch goes out with one write as it is
(send_frames), and the other side hands runs of DATA on still framed (on_frames) while other
datagrams come one by one (on_frame), whatever way the stream is cut."""

from __future__ import annotations

import asyncio

from enclave.agent import transport_tcp as tt
from enclave.discovery import PathAddr, Transport
from enclave.localport import free_port
from enclave.proto.relay_batch import pack_batch, unpack_batch
from enclave.proto.wire import MSG_DATA, MSG_HANDSHAKE_INIT
from tests.support.wait import wait_for_async

HOST = "127.0.0.1"


def data(i: int, size: int = 1400) -> bytes:
    return bytes([MSG_DATA, 0, 0, 0]) + i.to_bytes(4, "big") + bytes(size)


def test_tx_batch_goes_out_whole_and_comes_back_as_runs() -> None:
    async def main() -> None:
        singles: list[bytes] = []
        runs: list[bytes] = []
        rx = tt.TcpTransport(free_port(), lambda d, a: singles.append(d), bind_host=HOST,
                             on_frames=lambda f, a: runs.append(bytes(f)))
        tx = tt.TcpTransport(free_port(), lambda d, a: None, bind_host=HOST,
                             on_frames=lambda f, a: None)
        await rx.start()
        await tx.start()
        try:
            to = PathAddr(Transport.TCP, HOST, rx.port)
            hello = bytes([MSG_HANDSHAKE_INIT, 0, 0, 0]) + b"hello"
            tx.send(hello, to)  # connects; the handshake goes as a single frame
            await wait_for_async(lambda: singles == [hello], 5, what="handshake delivered")
            msgs = [data(i) for i in range(200)]
            for k in range(0, 200, 40):  # five TX batches of 40 packets
                assert tx.send_frames(pack_batch(msgs[k:k + 40]), to)
            tx.send(hello, to)
            await wait_for_async(lambda: len(singles) == 2, 5, what="second handshake")
            got = [m for run in runs for m in unpack_batch(run) or []]
            assert got == msgs  # every DATA packet, in order, in runs rather than one by one
            assert len(runs) < len(msgs) and singles == [hello, hello]
            assert tx.tx_frames == 7  # 2 single datagrams + 5 batch writes
        finally:
            await tx.close()
            await rx.close()

    asyncio.run(main())


def test_runs_survive_any_cut_of_the_stream() -> None:
    """A raw client cuts a batch at odd places: the transport still hands on whole frames."""
    async def main() -> None:
        runs: list[bytes] = []
        singles: list[bytes] = []
        rx = tt.TcpTransport(free_port(), lambda d, a: singles.append(d), bind_host=HOST,
                             on_frames=lambda f, a: runs.append(bytes(f)))
        await rx.start()
        try:
            r, w = await asyncio.open_connection(HOST, rx.port)
            msgs = [data(i, 37 * i % 500 + 1) for i in range(60)]
            stream = pack_batch(msgs)
            for cut in range(0, len(stream), 333):
                w.write(stream[cut:cut + 333])
                await w.drain()
                await asyncio.sleep(0)
            await wait_for_async(
                lambda: sum(len(unpack_batch(x) or []) for x in runs) == 60, 5,
                what="all frames")
            assert [m for run in runs for m in unpack_batch(run) or []] == msgs
            assert singles == []
            w.write(b"\x00\x00")  # a zero length breaks the framing: the stream is closed
            await w.drain()
            assert await asyncio.wait_for(r.read(10), 5) == b""
            w.close()
        finally:
            await rx.close()

    asyncio.run(main())
