"""The native relay forwarder's table and per-datagram decision (RelayForwarder.classify: the
thread's own C function, no I/O), and RelayCore keeping that table in step with its
registrations (installed only for a live pair whose tickets name each other, removed at once).

No thread runs here: the forwarder is given a UDP socket it never reads.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from enclave._fastpath import RelayForwarder
from enclave.platform.relay import REGISTRATION_LIFETIME
from enclave.proto.wire import (
    MSG_RELAY_CHALLENGE,
    MSG_RELAY_DATA,
    MSG_RELAY_REGISTER,
    pack_relay_header,
)
from tests.support.relay import EVE, RELAY, X_ADDR, Y_ADDR, Pair, ticket

A, B = ("198.18.1.1", 40000), ("198.18.2.1", 40001)


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield s
    s.close()


def forwarder(sock: socket.socket, **kw: float) -> RelayForwarder:
    return RelayForwarder(sock.fileno(), **kw)  # type: ignore[arg-type]


def data(channel: int, payload: bytes = b"ciphertext") -> bytes:
    return pack_relay_header(MSG_RELAY_DATA, channel) + payload


# --- the decision for one datagram ----------------------------------------------------------
@pytest.mark.parametrize(("case", "dgram", "src", "want"), [
    (1, data(7), A, "forward"),
    (2, data(8), A, "drop_unknown"),                       # unregistered channel
    (3, data(7), (A[0], A[1] + 1), "drop_unknown"),        # same host, other port
    (4, data(7), EVE, "drop_unknown"),                     # forged source
    (5, pack_relay_header(MSG_RELAY_REGISTER, 7) + bytes(90), A, "punt"),
    (6, pack_relay_header(MSG_RELAY_CHALLENGE, 7) + bytes(16), A, "punt"),
    (7, pack_relay_header(MSG_RELAY_DATA, 7), A, "punt"),  # header only: RelayCore's
    (8, b"\x23\x00\x01\x00" + struct.pack("<I", 7) + b"x", A, "punt"),  # reserved not 0
    (9, b"\x23\x00\x00\x00" + struct.pack("<I", 0) + b"x", A, "punt"),  # channel 0
    (10, b"\x23\x00\x00\x00" + struct.pack("<I", 65536) + b"x", A, "punt"),
    (11, b"\x23\x00\x00\x00\x07", A, "punt"),             # short
    (12, b"", A, "punt"),
    (13, b"\x10\x00\x00\x00" + bytes(60), A, "punt"),      # a direct-path message
])
def test_classify_table(sock: socket.socket, case: int, dgram: bytes, src: tuple[str, int],
                        want: str) -> None:
    fwd = forwarder(sock)
    fwd.install(A, 7, B, 3, 30)
    got = fwd.classify(dgram, src)
    assert got[0] == ("drop" if want.startswith("drop") else want), case
    if want.startswith("drop"):
        assert got[1] == want, case
    if want == "forward":
        assert got[1:] == (data(3), B), case  # only the channel changed, same size
        entry = fwd.lookup(A, 7)
        assert entry is not None and entry[3:] == (1, len(b"ciphertext"))


def test_expired_entry_is_not_used(sock: socket.socket) -> None:
    fwd = forwarder(sock)
    fwd.install(A, 7, B, 3, 0.001)
    time.sleep(0.01)
    assert fwd.classify(data(7), A) == ("drop", "drop_expired")
    fwd.install(A, 7, B, 3, 30)  # refreshed in place
    assert fwd.classify(data(7), A)[0] == "forward"


def test_each_entry_has_its_own_token_bucket(sock: socket.socket) -> None:
    fwd = forwarder(sock, rate=0.001, burst=3)
    fwd.install(A, 7, B, 3, 30)
    fwd.install(B, 3, A, 7, 30)
    got = [fwd.classify(data(7), A)[0] for _ in range(5)]
    assert got == ["forward"] * 3 + ["drop"] * 2
    assert fwd.classify(data(7), A) == ("drop", "drop_rate")
    assert fwd.classify(data(3), B)[0] == "forward"  # the other direction has its own
    fwd.install(A, 7, B, 3, 30)  # a refresh does not refill the bucket
    assert fwd.classify(data(7), A) == ("drop", "drop_rate")


def test_install_replaces_in_place_and_remove(sock: socket.socket) -> None:
    fwd = forwarder(sock)
    fwd.install(A, 7, B, 3, 30)
    fwd.classify(data(7), A)
    fwd.install(A, 7, EVE, 9, 30)
    entry = fwd.lookup(A, 7)
    assert entry is not None and entry[:2] == (EVE, 9) and entry[3] == 1 and len(fwd) == 1
    assert fwd.classify(data(7), A)[1:] == (data(9), EVE)
    assert fwd.remove(A, 7) is True
    assert fwd.remove(A, 7) is False
    assert fwd.lookup(A, 7) is None and len(fwd) == 0
    assert fwd.classify(data(7), A) == ("drop", "drop_unknown")


def test_ipv6_sources_and_destinations(sock: socket.socket) -> None:
    fwd = forwarder(sock)
    v6a, v6b = ("2001:db8::1", 40000), ("2001:db8::2", 50000)
    fwd.install(v6a, 7, v6b, 3, 30)
    fwd.install(A, 7, v6b, 4, 30)
    assert fwd.classify(data(7), v6a)[1:] == (data(3), v6b)
    assert fwd.classify(data(7), A)[1:] == (data(4), v6b)
    assert fwd.classify(data(7), ("2001:db8::1", 40001)) == ("drop", "drop_unknown")


def test_table_is_bounded(sock: socket.socket) -> None:
    fwd = forwarder(sock, max_entries=4)
    for ch in range(1, 5):
        fwd.install(A, ch, B, ch, 30)
    with pytest.raises(OverflowError):
        fwd.install(A, 5, B, 5, 30)
    fwd.install(A, 4, B, 44, 30)  # replacing is not growing
    fwd.remove(A, 1)
    fwd.install(A, 5, B, 5, 30)
    assert len(fwd) == 4


@pytest.mark.parametrize(("case", "args"), [
    (1, (A, 0, B, 3, 30.0)),
    (2, (A, 7, B, 65536, 30.0)),
    (3, (("198.18.1.1", 0), 7, B, 3, 30.0)),
    (4, (A, 7, B, 3, 0.0)),
    (5, (("not an address", 1), 7, B, 3, 30.0)),
])
def test_bad_install_arguments(sock: socket.socket, case: int,
                               args: tuple[tuple[str, int], int, tuple[str, int], int, float]
                               ) -> None:
    fwd = forwarder(sock)
    with pytest.raises((ValueError, OSError)):
        fwd.install(*args)
    assert len(fwd) == 0, case


def test_table_matches_a_dict_under_random_install_and_remove(sock: socket.socket) -> None:
    """Backward-shift deletion keeps every other key findable (few hosts: long probe runs)."""
    fwd = forwarder(sock, max_entries=600)
    rng = random.Random(13)
    model: dict[tuple[tuple[str, int], int], int] = {}
    for _ in range(20000):
        key = ((f"198.18.0.{rng.randint(1, 4)}", rng.randint(1000, 1010)), rng.randint(1, 20))
        if rng.random() < 0.55 and (key in model or len(model) < 600):
            dst_ch = rng.randint(1, 65535)
            fwd.install(key[0], key[1], B, dst_ch, 30)
            model[key] = dst_ch
        else:
            assert fwd.remove(*key) == (key in model)
            model.pop(key, None)
    assert len(fwd) == len(model)
    for (src, ch), dst_ch in model.items():
        entry = fwd.lookup(src, ch)
        assert entry is not None and entry[1] == dst_ch


# --- RelayCore keeps the table ---------------------------------------------------------------
@pytest.fixture
def pair(sock: socket.socket) -> tuple[Pair, RelayForwarder]:
    p = Pair()
    fwd = forwarder(sock)
    p.core.forward_with(fwd, p.now)
    return p, fwd


def channels(p: Pair) -> tuple[int, int]:
    """X's channel (for Y) and Y's channel (for X)."""
    px, py = p.x.path_for("Y"), p.y.path_for("X")
    assert px is not None and py is not None
    rx, ry = p.x.route(px), p.y.route(py)
    assert rx is not None and ry is not None
    return rx[1], ry[1]


def test_entries_only_for_a_live_mutual_pair(pair: tuple[Pair, RelayForwarder]) -> None:
    p, fwd = pair
    p.to_relay(p.x.add("Y", RELAY, ticket("XXXXX", "YYYYY"), p.now), X_ADDR)
    assert p.registered == {"X"} and len(fwd) == 0  # one side only
    p.to_relay(p.y.add("X", RELAY, ticket("YYYYY", "ZZZZZ"), p.now), Y_ADDR)
    assert len(fwd) == 0  # Y's ticket names someone else
    p.to_relay(p.y.add("Z", RELAY, ticket("YYYYY", "XXXXX"), p.now), Y_ADDR)
    assert len(fwd) == 2


def test_native_forwarding_equals_python_forwarding(pair: tuple[Pair, RelayForwarder]) -> None:
    p, fwd = pair
    p.register_both()
    cx, cy = channels(p)
    ex, ey = fwd.lookup(X_ADDR, cx), fwd.lookup(Y_ADDR, cy)
    assert ex is not None and ex[:2] == (Y_ADDR, cy)
    assert ey is not None and ey[:2] == (X_ADDR, cx)
    assert REGISTRATION_LIFETIME - 5 < ex[2] <= REGISTRATION_LIFETIME
    for src, ch in ((X_ADDR, cx), (Y_ADDR, cy)):
        msg = data(ch, b"opaque " * 20)
        python = p.core.receive(msg, src, p.now)
        native = fwd.classify(msg, src)
        assert native[0] == "forward" and [native[1:]] == python


def test_refresh_keeps_the_entries(pair: tuple[Pair, RelayForwarder]) -> None:
    p, fwd = pair
    p.register_both()
    cx, _ = channels(p)
    fwd.classify(data(cx), X_ADDR)
    p.now += 30
    p.to_relay(p.x.set_ticket("Y", ticket("XXXXX", "YYYYY", ttl=900), p.now), X_ADDR)
    entry = fwd.lookup(X_ADDR, cx)
    assert entry is not None and entry[3] == 1  # the same entry: its count survived


def test_revocation_cuts_both_directions_at_once(pair: tuple[Pair, RelayForwarder]) -> None:
    p, fwd = pair
    p.register_both()
    cx, cy = channels(p)
    p.core.allow_only({"XXXXX", "SOMEONE"})
    assert len(fwd) == 0
    assert fwd.classify(data(cx), X_ADDR) == ("drop", "drop_unknown")
    assert fwd.classify(data(cy), Y_ADDR) == ("drop", "drop_unknown")


def test_expiry_and_moving_remove_entries(pair: tuple[Pair, RelayForwarder]) -> None:
    p, fwd = pair
    p.register_both()
    cx, cy = channels(p)
    moved = ("198.18.1.1", 40999)  # X's NAT rebinds: X registers again from a new port
    p.where[moved] = "X"
    p.to_relay(p.x.add("Y", RELAY, ticket("XXXXX", "YYYYY"), p.now), moved)
    cx2, _ = channels(p)
    assert fwd.lookup(X_ADDR, cx) is None
    new_y = fwd.lookup(Y_ADDR, cy)
    assert new_y is not None and new_y[:2] == (moved, cx2)
    assert len(fwd) == 2
    p.core.expire(p.now + REGISTRATION_LIFETIME + 1)
    assert len(fwd) == 0
