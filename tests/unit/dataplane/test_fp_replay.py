"""The compiled anti-replay window (enclave/_fp_replay.pxi): numbered table cases + a model."""

from __future__ import annotations

import random
from collections import deque

import pytest

from enclave._fastpath import REPLAY_WINDOW, ReplayWindow

W = REPLAY_WINDOW
BIG = 2**64 - 1

# Each case: (number, name, steps); a step is (op, counter, expected result).
# "u" = update (after authentication), "c" = check (before decryption, no side effect).
CASES: list[tuple[int, str, list[tuple[str, int, bool]]]] = [
    (1, "in order", [("u", i, True) for i in range(300)]),
    (2, "duplicate", [("u", 7, True), ("c", 7, False), ("u", 7, False)]),
    (3, "reordered within window", [("u", 50, True), ("u", 10, True), ("u", 49, True),
                                    ("u", 10, False), ("u", 51, True), ("u", 49, False)]),
    (4, "too old", [("u", 10_000, True), ("c", 10_000 - W - 1, False),
                    ("u", 10_000 - W - 1, False), ("u", 0, False)]),
    (5, "window edge", [("u", 10_000, True), ("c", 10_000 - W, True),
                        ("u", 10_000 - W, True), ("u", 10_000 - W, False),
                        ("c", 10_000 - W - 1, False)]),
    (6, "far jump", [("u", 3, True), ("u", 10**12, True), ("c", 3, False),
                     ("c", 10**12 - 1, True), ("u", 10**12 - W, True), ("u", 10**12 + 1, True)]),
    (7, "update only after auth", [("c", 5, True), ("c", 5, True), ("u", 5, True),
                                   ("c", 5, False)]),
    (8, "counter 0 first", [("u", 0, True), ("u", 0, False), ("u", 1, True)]),
    (9, "top of counter space", [("u", BIG - 1, True), ("u", BIG - 1, False),
                                 ("u", BIG - 1 - W, True), ("u", BIG, False)]),
    (10, "jump by exactly one ring", [("u", 100, True), ("u", 100 + 8192, True),
                                      ("c", 100, False), ("c", 100 + 8192 - 64, True)]),
]


@pytest.mark.parametrize(("num", "name", "steps"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_replay_table(num: int, name: str, steps: list[tuple[str, int, bool]]) -> None:
    w = ReplayWindow()
    for i, (op, counter, expected) in enumerate(steps):
        got = w.update(counter) if op == "u" else w.check(counter)
        assert got is expected, f"case {num} ({name}) step {i}: {op}({counter})"


def test_window_size() -> None:
    assert W >= 8128


def test_limit() -> None:
    w = ReplayWindow(limit=1000)
    assert w.update(999) is True
    assert w.check(1000) is False and w.update(1000) is False and w.last == 999


def test_jump_clears_aliased_bits() -> None:
    w = ReplayWindow()
    for c in range(1, 9000):
        assert w.update(c)
    top = 9000 + 3 * 8192 + 17
    assert w.update(top)
    # every counter inside the new window was never seen: all must be acceptable
    assert all(w.check(top - k) for k in range(1, W + 1))
    assert not w.check(top - W - 1)


def test_reset() -> None:
    w = ReplayWindow()
    w.update(5)
    w.reset()
    assert w.last == 0 and w.update(5) is True


@pytest.mark.parametrize("seed", range(5))
def test_matches_reference_model(seed: int) -> None:
    rnd = random.Random(seed)
    w = ReplayWindow()
    seen: set[int] = set()
    recent: deque[int] = deque([0], maxlen=50)
    last = 0
    base = 0
    for _ in range(5_000):
        r = rnd.random()
        if r < 0.6:
            base += rnd.randint(0, 3)
            c = base
        elif r < 0.9:
            c = max(0, base - rnd.randint(0, W + 200))  # reordered / old / edge
        elif r < 0.99:
            c = rnd.choice(recent)  # replay of a recent one
        else:
            base += rnd.randint(W, 5 * W)  # far jump
            c = base
        expected = c not in seen and (c > last or last - c <= W) and c < BIG
        assert w.check(c) is expected
        assert w.update(c) is expected
        if expected:
            seen.add(c)
            recent.append(c)
            last = max(last, c)
