"""CoDel on the agent's relay-over-TLS send queue (enclave.agent.relay_tls_aqm), with the
caller's clock: a standing queue loses bulk DATA datagrams and never small or non-DATA ones;
a queue below the target loses nothing."""

from __future__ import annotations

from enclave.agent.relay_tls_aqm import INTERVAL_NS, TARGET_NS, SendAqm
from enclave.proto.relay_batch import pack_batch, unpack_batch
from enclave.proto.wire import MSG_DATA
from enclave.relay_bulk import BULK_MIN, is_bulk

MS = 1_000_000
BULK = bytes([MSG_DATA]) + b"B" * 1300
SMALL = bytes([MSG_DATA]) + b"s" * 60  # an ACK's size
HANDSHAKE = bytes([1]) + b"h" * 1300  # not DATA: never dropped, however long


def _batch() -> tuple[bytes, int]:
    frames = [BULK] * 20 + [SMALL] * 5 + [HANDSHAKE]
    return pack_batch(frames), len(frames)


def test_bulk_is_long_data_only() -> None:
    assert is_bulk(BULK) and not is_bulk(SMALL) and not is_bulk(HANDSHAKE)
    assert not is_bulk(bytes([MSG_DATA]) + bytes(BULK_MIN - 2))
    assert is_bulk(bytes([MSG_DATA]) + bytes(BULK_MIN - 1))


def test_standing_queue_drops_bulk_never_small() -> None:
    aqm = SendAqm()
    batch, count = _batch()
    sent = {BULK: 0, SMALL: 0, HANDSHAKE: 0}
    got = {BULK: 0, SMALL: 0, HANDSHAKE: 0}
    now = 1_000 * MS
    for _ in range(200):  # 2 s of batches that each waited 20 ms (4x the target)
        out, n = aqm.admit(batch, count, 4 * TARGET_NS, now)
        msgs = unpack_batch(out) if n else []
        assert msgs is not None and len(msgs) == n
        for m in msgs:
            got[m] += 1
        for m in (BULK,) * 20 + (SMALL,) * 5 + (HANDSHAKE,):
            sent[m] += 1
        now += 10 * MS
    assert aqm.drops_codel > 0
    assert got[SMALL] == sent[SMALL] and got[HANDSHAKE] == sent[HANDSHAKE]
    assert got[BULK] == sent[BULK] - aqm.drops_codel
    assert aqm.kept_small > 0 and aqm.dropping


def test_no_standing_queue_drops_nothing() -> None:
    aqm = SendAqm()
    batch, count = _batch()
    now = 1_000 * MS
    for i in range(500):  # short spikes above the target, never for a whole interval
        sojourn = 3 * TARGET_NS if i % 5 == 0 else TARGET_NS // 2
        out, n = aqm.admit(batch, count, sojourn, now)
        assert out is batch and n == count
        now += INTERVAL_NS // 10
    assert aqm.drops_codel == 0 and not aqm.dropping
