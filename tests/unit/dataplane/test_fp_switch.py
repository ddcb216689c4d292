"""The compiled L2 switch table (enclave/_fp_switch.pxi)."""

from __future__ import annotations

import random

import pytest

from enclave._fastpath import MAC_DROP, MAC_FLOOD, MacTable

ETH_IPV4 = b"\x08\x00"


def mac(n: int) -> bytes:
    return bytes([0x02]) + n.to_bytes(5, "big")  # locally administered unicast


def frame(dst: bytes, src: bytes, payload: bytes = b"") -> bytes:
    return dst + src + ETH_IPV4 + payload


def to(dst: bytes) -> bytes:
    return frame(dst, mac(0xFFFFFF))


# (case, name, learned [(src mac, slot, now)], lookup frame, now, expected)
A, B = mac(1), mac(2)
CASES = [
    (1, "learned unicast", [(A, 3, 0)], to(A), 1, 3),
    (2, "unknown unicast floods", [(A, 3, 0)], to(B), 1, MAC_FLOOD),
    (3, "broadcast floods", [(A, 3, 0)], to(b"\xff" * 6), 1, MAC_FLOOD),
    (4, "IPv4 multicast floods", [], to(bytes.fromhex("01005e000001")), 1, MAC_FLOOD),
    (5, "IPv6 multicast floods", [], to(bytes.fromhex("333300000001")), 1, MAC_FLOOD),
    (6, "runt dropped", [(A, 3, 0)], A + B, 1, MAC_DROP),
    (7, "MAC moved to another peer", [(A, 3, 0), (A, 5, 10)], to(A), 11, 5),
    (8, "expired entry floods", [(A, 3, 0)], to(A), 1001, MAC_FLOOD),
    (9, "refresh keeps it", [(A, 3, 0), (A, 3, 900)], to(A), 1500, 3),
    (10, "max age inclusive", [(A, 3, 0)], to(A), 1000, 3),
]


@pytest.mark.parametrize(("num", "name", "learn", "lookup", "now", "expected"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_switch_table(num: int, name: str, learn: list[tuple[bytes, int, int]],
                      lookup: bytes, now: int, expected: int) -> None:
    t = MacTable(capacity=64, max_age=1000, seed=num)
    for src, slot, when in learn:
        assert t.learn(frame(mac(0x77), src), slot, when)
    assert t.lookup(lookup, now) == expected


@pytest.mark.parametrize(
    ("what", "data", "slot"),
    [
        ("runt", frame(A, B)[:13], 1),
        ("empty", b"", 1),
        ("group-bit source", frame(A, bytes.fromhex("01005e000001")), 1),
        ("broadcast source", frame(A, b"\xff" * 6), 1),
        ("negative slot", frame(A, B), -1),
    ],
)
def test_bad_frames_not_learned(what: str, data: bytes, slot: int) -> None:
    t = MacTable(capacity=16, seed=1)
    assert t.learn(data, slot, 0) is False, what
    assert t.count(0) == 0
    assert t.lookup(b"", 0) == MAC_DROP


def test_forget_slot() -> None:
    t = MacTable(capacity=64, seed=2)
    for i in range(10):
        t.learn(frame(A, mac(100 + i)), i % 2, 0)
    assert t.forget_slot(1) == 5
    assert t.count(0) == 5
    assert all(t.lookup(to(mac(100 + i)), 0) == (0 if i % 2 == 0 else MAC_FLOOD)
               for i in range(10))


@pytest.mark.parametrize("capacity", [16, 4096])
def test_never_a_wrong_peer_under_pressure(capacity: int) -> None:
    """Against a dict model: the table may forget (evict) but never misdirect."""
    rnd = random.Random(capacity)
    t = MacTable(capacity=capacity, max_age=10**9, seed=capacity)
    model: dict[bytes, int] = {}
    for now in range(20_000):
        m = mac(rnd.randrange(3 * capacity))
        slot = rnd.randrange(50)
        assert t.learn(frame(A, m), slot, now)
        model[m] = slot
        assert t.lookup(to(m), now) == slot  # just learned: always found
        probe = mac(rnd.randrange(3 * capacity))
        got = t.lookup(to(probe), now)
        assert got in (model.get(probe, MAC_FLOOD), MAC_FLOOD)
    assert t.count(20_000) <= t.capacity


def test_low_load_keeps_everything() -> None:
    t = MacTable(capacity=4096, seed=7)
    for i in range(1024):  # 25 % load, the documented sizing
        t.learn(frame(A, mac(i)), i % 100, 0)
    assert all(t.lookup(to(mac(i)), 0) == i % 100 for i in range(1024))


def test_arguments() -> None:
    assert MacTable(capacity=1).capacity == 16 and MacTable(capacity=1000).capacity == 1024
    with pytest.raises(ValueError):
        MacTable(capacity=0)
    with pytest.raises(OverflowError):
        MacTable(seed=-1)
