"""The relay over TLS forwards one WebSocket message in as one message out with only the
header's channel swapped: the batch is never walked (a malformed one goes through as it is:
the receiving agent drops it), never re-framed, never grown."""

from __future__ import annotations

import os
import time

import pytest

from enclave.platform.relay import mint_ticket, verify_ticket
from enclave.platform.relay_ws import RelayWs, _Conn
from enclave.proto.relay_batch import MAX_MESSAGE, pack_batch
from enclave.proto.wire import (
    MSG_RELAY_DATA,
    MSG_RELAY_REGISTER,
    RELAY_HEADER_SIZE,
    pack_relay_header,
)
from enclave.wslink import WsLink

KEY = bytes(range(32))


def registered() -> tuple[RelayWs, _Conn, _Conn]:
    relay = RelayWs(lambda raw, now: verify_ticket(KEY, raw, now))
    x, y = (_Conn(WsLink(lambda op, m: None, client=False, max_message=MAX_MESSAGE))
            for _ in range(2))
    now = time.time()
    exp = int(now) + 600
    for conn, ch, src, dst in ((x, 7, "XXXXX", "YYYYY"), (y, 3, "YYYYY", "XXXXX")):
        got = relay.receive(conn, pack_relay_header(MSG_RELAY_REGISTER, ch)
                            + mint_ticket(KEY, src, dst, exp), now)
        assert got is not None and got[0] is conn
    return relay, x, y


@pytest.mark.parametrize(("case", "batch"), [
    (1, pack_batch([os.urandom(1400)] * 45)),
    (2, pack_batch([os.urandom(n) for n in (1, 100, 65535)])),
    (3, b"\x00\x00garbage that is no batch"),  # malformed: forwarded as it came
    (4, os.urandom(1 << 20)),
])
def test_one_message_in_one_out_only_the_channel_changes(case: int, batch: bytes) -> None:
    relay, x, y = registered()
    msg = pack_relay_header(MSG_RELAY_DATA, 7) + batch
    got = relay.receive(x, msg, time.time())
    assert got is not None, case
    dst, head, body = got
    assert dst is y
    out = head + bytes(body)  # what the WebSocket message carries (joined by the send)
    assert len(out) == len(msg)
    assert out[:RELAY_HEADER_SIZE] == pack_relay_header(MSG_RELAY_DATA, 3)
    assert out[RELAY_HEADER_SIZE:] == batch
    assert relay.forwarded == 1 and relay.forwarded_bytes == len(batch)


def test_unregistered_channel_and_header_only_get_nothing() -> None:
    relay, x, _y = registered()
    now = time.time()
    assert relay.receive(x, pack_relay_header(MSG_RELAY_DATA, 8) + b"x", now) is None
    assert relay.receive(x, pack_relay_header(MSG_RELAY_DATA, 7), now) is None
    assert relay.forwarded == 0 and relay.dropped == 2
