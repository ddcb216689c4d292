"""The batch framing walked by the compiled fp.frame_runs (TCP streams, relay-over-TLS batches,
the fast path's TX / INJECT batches): golden cases, a stream cut at every byte, and the relay
client's route for the fast path."""

from __future__ import annotations

import pytest

from enclave.agent.relay_client import RelayClient
from enclave.agent.transport_tcp import FrameDecoder, frame
from enclave.discovery.candidates import PathAddr, Transport
from enclave.proto.relay_batch import FRAME_PREFIX, MAX_FRAME, pack_batch
from enclave.proto.wire import MSG_DATA, MSG_HANDSHAKE_INIT

fp = pytest.importorskip("enclave._fastpath")

D1 = bytes([MSG_DATA]) + b"\x00\x00\x00one"
D2 = bytes([MSG_DATA]) + b"\x00\x00\x00two!"
H = bytes([MSG_HANDSHAKE_INIT]) + b"\x00\x00\x00hello"


def f(*msgs: bytes) -> bytes:
    return b"".join(frame(m) for m in msgs)


# (case, data, offset, max_run, expected (end, frames, runs))
CASES = [
    (1, b"", 0, fp.PUNT_BATCH_MAX, (0, 0, [])),
    (2, f(D1), 0, fp.PUNT_BATCH_MAX, (9, 1, [(0, 9, True)])),
    (3, f(D1, D2), 0, fp.PUNT_BATCH_MAX, (19, 2, [(0, 19, True)])),  # one run, framed
    (4, f(D1, H, D2), 0, fp.PUNT_BATCH_MAX,  # the handshake alone, without its prefix
     (30, 3, [(0, 9, True), (11, 20, False), (20, 30, True)])),
    (5, f(H, H), 0, fp.PUNT_BATCH_MAX, (22, 2, [(2, 11, False), (13, 22, False)])),
    (6, f(D1, D2) + b"\x00", 0, fp.PUNT_BATCH_MAX, (19, 2, [(0, 19, True)])),  # partial length
    (7, f(D1) + f(D2)[:5], 0, fp.PUNT_BATCH_MAX, (9, 1, [(0, 9, True)])),  # partial frame
    (8, b"xxxx" + f(D1), 4, fp.PUNT_BATCH_MAX, (13, 1, [(4, 13, True)])),  # from an offset
    (9, f(D1, D1, D1), 0, 18, (27, 3, [(0, 18, True), (18, 27, True)])),  # runs <= max_run
]


@pytest.mark.parametrize(("case", "data", "offset", "max_run", "want"), CASES,
                         ids=[f"case{c[0]}" for c in CASES])
def test_frame_runs_golden(case: int, data: bytes, offset: int, max_run: int,
                           want: tuple[int, int, list[tuple[int, int, bool]]]) -> None:
    assert fp.frame_runs(data, offset, max_run) == want


def test_frame_runs_refuses_broken_input() -> None:
    with pytest.raises(ValueError):
        fp.frame_runs(f(D1) + b"\x00\x00" + f(D2))  # a zero length: the framing broke
    with pytest.raises(ValueError):
        fp.frame_runs(f(D1), 10)  # offset past the end
    with pytest.raises(ValueError):
        fp.frame_runs(f(D1), 0, 2)  # a run cannot hold a frame


def test_the_framing_is_the_relay_batch_and_the_tcp_frame() -> None:
    msgs = [D1, H, D2]
    assert pack_batch(msgs) == f(*msgs)
    assert FRAME_PREFIX == 2 and MAX_FRAME == 0xFFFF
    big = bytes([MSG_DATA]) + bytes(MAX_FRAME - 1)
    assert fp.frame_runs(frame(big)) == (MAX_FRAME + 2, 1, [(0, MAX_FRAME + 2, True)])


def test_feed_runs_at_every_cut_gives_the_same_messages() -> None:
    stream = f(D1, D2, H, D1, H, H, D2)
    want = [D1, D2, H, D1, H, H, D2]
    for cut in range(len(stream) + 1):
        dec = FrameDecoder()
        got: list[bytes] = []
        for chunk in (stream[:cut], stream[cut:]):
            for is_data, run in dec.feed_runs(chunk):
                if is_data:  # a run of DATA stays framed: split it here to compare
                    got += _messages(run)
                else:
                    got.append(run)
        assert got == want, cut


def test_feed_runs_breaks_on_a_zero_length() -> None:
    dec = FrameDecoder()
    assert dec.feed_runs(f(D1)[:3]) == []
    with pytest.raises(ValueError):
        dec.feed_runs(f(D1)[3:] + b"\x00\x00")


def test_relay_route_only_for_our_channels() -> None:
    rc = RelayClient()
    rc.add("peer", ("198.18.0.9", 3478), b"t" * 81, 0.0)
    path = rc.path_for("peer")
    assert path is not None
    assert rc.route(path) == (("198.18.0.9", 3478), path.port)
    assert rc.route(PathAddr(Transport.RELAY, "198.18.0.10", path.port)) is None  # other relay
    assert rc.route(PathAddr(Transport.RELAY_TLS, "198.18.0.9", path.port)) is None
    rc.remove("peer")
    assert rc.route(path) is None


def _messages(run: bytes) -> list[bytes]:
    out, off = [], 0
    while off < len(run):
        n = int.from_bytes(run[off : off + 2], "big")
        out.append(run[off + 2 : off + 2 + n])
        off += 2 + n
    return out
