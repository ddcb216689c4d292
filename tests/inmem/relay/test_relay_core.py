"""The relay (sans-I/O core) and the agent's relay client, driven against each other in memory.

Numbered table tests for tickets; the core's rules: silence without a valid ticket, a cookie
round trip before registering, no reply larger than its request, forwarding only between two
registrations whose tickets name each other, expiry, bounded state (REGISTER rates:
test_relay_register_rate.py).
"""

from __future__ import annotations

import pytest

from enclave.agent.relay_client import RelayClient
from enclave.agent.transport_tcp import FrameDecoder, frame
from enclave.discovery import PathAddr, Transport
from enclave.platform.relay import (
    REGISTRATION_LIFETIME,
    RelayCore,
    verify_ticket,
)
from enclave.proto.wire import (
    MSG_RELAY_CHALLENGE,
    MSG_RELAY_DATA,
    MSG_RELAY_REGISTER,
    MSG_RELAY_REGISTERED,
    RELAY_COOKIE_SIZE,
    pack_relay_header,
)
from tests.support.relay import EVE, KEY, NOW, RELAY, X_ADDR, Y_ADDR, Pair, ticket


# --- tickets --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("case", "data", "ok"),
    [
        (1, ticket("XXXXX", "YYYYY"), True),
        (2, ticket("XXXXX", "YYYYY", key=b"\x01" * 32), False),  # other key
        (3, ticket("XXXXX", "YYYYY", ttl=-1), False),  # expired
        (4, ticket("XXXXX", "XXXXX"), False),  # to itself
        (5, ticket("XXXXX", "YYYYY")[:-1], False),  # truncated
        (6, ticket("XXXXX", "YYYYY") + b"\x00", False),  # trailing byte
        (7, b"", False),
        (8, bytes(200), False),
        (9, ticket("XXXXX", "YYYYY")[:9] + b"Z" + ticket("XXXXX", "YYYYY")[10:], False),  # edited
    ],
)
def test_ticket_table(case: int, data: bytes, ok: bool) -> None:
    got = verify_ticket(KEY, data, NOW)
    assert (got is not None) == ok, case
    if ok:
        assert got is not None and (got.src, got.dst) == ("XXXXX", "YYYYY")


# --- core + client (tests.support.relay.Pair) --------------------------------------------
def test_register_and_forward_both_ways_same_size() -> None:
    p = Pair()
    p.register_both()
    assert p.registered == {"X", "Y"} and len(p.core) == 2
    p.send(p.x, "Y", b"ciphertext-1", X_ADDR)
    p.send(p.y, "X", b"ciphertext-2", Y_ADDR)
    assert [m for _, m in p.got["Y"]] == [b"ciphertext-1"]
    assert [m for _, m in p.got["X"]] == [b"ciphertext-2"]
    # each side sees the other as its own channel's relay path
    assert p.got["Y"][0][0] == p.y.path_for("X")
    assert p.got["X"][0][0] == p.x.path_for("Y")
    assert p.core.forwarded == 2


def test_one_sided_registration_forwards_nothing() -> None:
    p = Pair()
    p.to_relay(p.x.add("Y", RELAY, ticket("XXXXX", "YYYYY"), p.now), X_ADDR)
    assert p.registered == {"X"}
    p.send(p.x, "Y", b"nobody to take it", X_ADDR)
    assert p.got == {"X": [], "Y": []} and p.core.forwarded == 0
    # a ticket for someone else does not complete the pair either
    p.to_relay(p.y.add("X", RELAY, ticket("YYYYY", "ZZZZZ"), p.now), Y_ADDR)
    p.send(p.x, "Y", b"still nobody", X_ADDR)
    assert p.core.forwarded == 0


@pytest.mark.parametrize(
    ("case", "data"),
    [
        (1, b""),
        (2, b"\x20\x00\x00"),
        (3, pack_relay_header(MSG_RELAY_REGISTER, 1)),  # no cookie, no ticket
        (4, pack_relay_header(MSG_RELAY_REGISTER, 1) + bytes(16) + b"garbage" * 10),
        (5, pack_relay_header(MSG_RELAY_REGISTER, 1) + bytes(16) + ticket("A", "B", key=b"k" * 32)),
        (6, pack_relay_header(MSG_RELAY_DATA, 1) + b"x" * 100),  # unregistered data
        (7, pack_relay_header(MSG_RELAY_CHALLENGE, 1) + bytes(16)),  # relay-to-agent types
        (8, pack_relay_header(MSG_RELAY_REGISTERED, 1) + bytes(4)),
        (9, b"\x20\x00\x00\x00\x00\x00\x00\x00" + bytes(80)),  # channel 0
        (10, b"\x01\x00\x00\x00" + bytes(100)),  # an enclave handshake type
    ],
)
def test_unauthenticated_input_gets_silence(case: int, data: bytes) -> None:
    core = RelayCore(KEY)
    assert core.receive(data, EVE, NOW) == [], case
    assert len(core) == 0


def test_forged_source_cannot_register_without_the_cookie() -> None:
    core = RelayCore(KEY, cookie_secret=b"c" * 32)
    req = pack_relay_header(MSG_RELAY_REGISTER, 7) + bytes(16) + ticket("XXXXX", "YYYYY")
    out = core.receive(req, EVE, NOW)  # the challenge goes to the (claimed) source ...
    assert len(out) == 1 and out[0][1] == EVE and len(out[0][0]) < len(req)
    # ... so whoever forged EVE as source never learns it; guessing fails
    guess = pack_relay_header(MSG_RELAY_REGISTER, 7) + b"\x55" * 16 + ticket("XXXXX", "YYYYY")
    assert core.receive(guess, EVE, NOW)[0][0][0] == MSG_RELAY_CHALLENGE
    assert len(core) == 0
    # a cookie is bound to the address: X's cookie does not register from EVE
    cookie = core.cookie(X_ADDR, 7, NOW)
    stolen = pack_relay_header(MSG_RELAY_REGISTER, 7) + cookie + ticket("XXXXX", "YYYYY")
    assert core.receive(stolen, EVE, NOW)[0][0][0] == MSG_RELAY_CHALLENGE
    ok = core.receive(stolen, X_ADDR, NOW)
    assert ok[0][0][0] == MSG_RELAY_REGISTERED and len(core) == 1
    assert len(cookie) == RELAY_COOKIE_SIZE


def test_registrations_expire_and_refresh_keeps_them() -> None:
    p = Pair()
    p.register_both()
    p.now += REGISTRATION_LIFETIME - 5
    p.to_relay(p.x.due(p.now + 100), X_ADDR)  # X refreshes, Y does not
    p.now += 10
    p.core.expire(p.now)
    assert len(p.core) == 1
    p.send(p.x, "Y", b"late", X_ADDR)
    assert p.got["Y"] == []


def test_roaming_reregistration_moves_the_pair() -> None:
    p = Pair()
    p.register_both()
    new_x = ("198.18.1.1", 50000)
    p.where[new_x] = "X"
    p.to_relay(p.x.add("Y", RELAY, ticket("XXXXX", "YYYYY"), p.now), new_x)
    assert len(p.core) == 2  # the old registration was replaced
    p.send(p.y, "X", b"to the new address", Y_ADDR)
    assert [m for _, m in p.got["X"]] == [b"to the new address"]


def test_client_ignores_foreign_sources_and_channels() -> None:
    c = RelayClient()
    c.add("Y", RELAY, ticket("XXXXX", "YYYYY"), NOW)
    path = c.path_for("Y")
    assert path is not None
    msg = pack_relay_header(MSG_RELAY_DATA, path.port) + b"payload"
    assert c.receive(msg, EVE, NOW) is None  # not our relay
    assert c.receive(pack_relay_header(MSG_RELAY_DATA, 999) + b"p", RELAY, NOW) is None
    assert c.receive(b"\x23\x00", RELAY, NOW) is None
    got = c.receive(msg, RELAY, NOW)
    assert got is not None and got.kind == "data" and got.message == b"payload"
    assert c.wrap(b"m", PathAddr(Transport.RELAY, RELAY[0], 999)) is None
    c.remove("Y")
    assert c.receive(msg, RELAY, NOW) is None and c.path_for("Y") is None


# --- TCP framing ----------------------------------------------------------------------------
def test_frames_survive_any_split() -> None:
    msgs = [b"a", b"b" * 1500, b"c" * 65535, b"d" * 3]
    stream = b"".join(frame(m) for m in msgs)
    for step in (1, 2, 7, 1500, len(stream)):
        dec = FrameDecoder()
        got: list[bytes] = []
        for i in range(0, len(stream), step):
            got += dec.feed(stream[i : i + step])
        assert got == msgs, step


def test_bad_frames_rejected() -> None:
    with pytest.raises(ValueError):
        FrameDecoder().feed(b"\x00\x00")
    with pytest.raises(ValueError):
        frame(b"")
    with pytest.raises(ValueError):
        frame(b"x" * 65536)
