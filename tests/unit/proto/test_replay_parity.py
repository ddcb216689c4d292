"""The Python replay window (enclave/proto/replay.py) and the compiled one (enclave/_fp_replay.pxi)
give the same verdict for every counter, walked at the window's edges.

Each numbered case starts both windows fresh, feeds them the prelude (authenticated counters, each
must be accepted by both), then asks both about one counter: check() before decryption, update()
after it, and update() once more (a duplicate is always refused).  Every case runs with the
highest counter at the first and at the last bit of a 64-bit block of the compiled ring.

    W = REPLAY_WINDOW (8128)   accepted: not seen, and counter > highest or highest - counter <= W
    H = the highest counter     H - W is the oldest counter still accepted; H - W - 1 is too old
"""

from __future__ import annotations

import random

import pytest

from enclave.proto.replay import COUNTER_LIMIT, REPLAY_WINDOW, ReplayWindow

fp = pytest.importorskip("enclave._fastpath")

W = REPLAY_WINDOW
TOP = 2**64 - 1
RING = 128 * 64  # one full turn of the compiled ring: W + 64

# (number, description, prelude, counter under test, expected verdict); `h` is the highest counter
CASES = [
    (1, "counter 0 on a fresh window", lambda h: [], lambda h: 0, True),
    (2, "counter 0 again", lambda h: [0], lambda h: 0, False),
    (3, "counter 1 after 0", lambda h: [0], lambda h: 1, True),
    (4, "counter 1 first, then 0 (late)", lambda h: [1], lambda h: 0, True),
    (5, "max-window + 1 below the highest: too old", lambda h: [h], lambda h: h - W - 1, False),
    (6, "max-window below the highest: the edge", lambda h: [h], lambda h: h - W, True),
    (7, "max-window - 1 below the highest", lambda h: [h], lambda h: h - W + 1, True),
    (8, "duplicate at the edge", lambda h: [h, h - W], lambda h: h - W, False),
    (9, "duplicate at max-window - 1", lambda h: [h, h - W + 1], lambda h: h - W + 1, False),
    (10, "duplicate of the highest", lambda h: [h], lambda h: h, False),
    (11, "the next counter", lambda h: [h], lambda h: h + 1, True),
    (12, "jump of exactly W: the old highest sits at the edge, seen", lambda h: [h, h + W],
     lambda h: h, False),
    (13, "jump of exactly W: one below the old highest is too old", lambda h: [h, h + W],
     lambda h: h - 1, False),
    (14, "jump of exactly W: unseen counter inside", lambda h: [h, h + W], lambda h: h + 1, True),
    (15, "two jumps of exactly W: the middle highest sits at the edge, seen",
     lambda h: [h, h + W, h + 2 * W], lambda h: h + W, False),
    (16, "jump of W + 1: the old highest is too old", lambda h: [h, h + W + 1],
     lambda h: h, False),
    (17, "jump of W + 1: the new edge was never seen", lambda h: [h, h + W + 1],
     lambda h: h + 1, True),
    (18, "jump of W + 1: duplicate of the new highest", lambda h: [h, h + W + 1],
     lambda h: h + W + 1, False),
    (19, "jump of W - 1: the old highest is still remembered", lambda h: [h, h + W - 1],
     lambda h: h, False),
    (20, "jump of W - 1: one below the old highest is the edge", lambda h: [h, h + W - 1],
     lambda h: h - 1, True),
    (21, "jump of W - 1: two below the old highest is too old", lambda h: [h, h + W - 1],
     lambda h: h - 2, False),
    (22, "jump of one ring turn (W + 64): the aliased block was cleared", lambda h: [h, h + RING],
     lambda h: h + 64, True),
    (23, "jump of one ring turn: the old highest is too old", lambda h: [h, h + RING],
     lambda h: h, False),
    (24, "edge reached from counter 0", lambda h: [0, W], lambda h: 0, False),
    (25, "counter 0 unseen at the edge", lambda h: [W], lambda h: 0, True),
    (26, "counter 0 one past the edge", lambda h: [W + 1], lambda h: 0, False),
    (27, "counter 1 at the edge after W + 1", lambda h: [W + 1], lambda h: 1, True),
    (28, "the whole window filled, then its oldest again", lambda h: list(range(h - W, h + 1)),
     lambda h: h - W, False),
    (29, "the whole window filled, then the next", lambda h: list(range(h - W, h + 1)),
     lambda h: h + 1, True),
    (30, "2^64 - 1 on a fresh window (the counter limit)", lambda h: [], lambda h: TOP, False),
    (31, "2^64 - 1 after 2^64 - 2", lambda h: [TOP - 1], lambda h: TOP, False),
    (32, "2^64 - 2 again", lambda h: [TOP - 1], lambda h: TOP - 1, False),
    (33, "the edge below 2^64 - 2", lambda h: [TOP - 1], lambda h: TOP - 1 - W, True),
    (34, "one past the edge below 2^64 - 2", lambda h: [TOP - 1], lambda h: TOP - 2 - W, False),
    (35, "far jump (to 2^63): the old highest is too old", lambda h: [h, 2**63],
     lambda h: h, False),
    (36, "far jump (to 2^63): its edge was never seen", lambda h: [h, 2**63],
     lambda h: 2**63 - W, True),
]

HIGHEST = [pytest.param(64 * 1000, id="block-first-bit"), pytest.param(64 * 1000 + 63,
                                                                        id="block-last-bit")]


def both() -> tuple[ReplayWindow, fp.ReplayWindow]:
    return ReplayWindow(), fp.ReplayWindow()


def test_one_window_size_for_python_and_c() -> None:
    assert fp.REPLAY_WINDOW == REPLAY_WINDOW == 8128
    assert COUNTER_LIMIT == TOP


@pytest.mark.parametrize("h", HIGHEST)
@pytest.mark.parametrize(("num", "name", "prelude", "counter", "expected"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_edges_same_verdict(h: int, num: int, name: str, prelude: object, counter: object,
                            expected: bool) -> None:
    py, c = both()
    for i, x in enumerate(prelude(h)):  # type: ignore[operator]
        assert (py.update(x), c.update(x)) == (True, True), f"case {num} prelude {i}: {x}"
    x = counter(h)  # type: ignore[operator]
    assert (py.check(x), c.check(x)) == (expected, expected), f"case {num} ({name}): check({x})"
    assert (py.update(x), c.update(x)) == (expected, expected), f"case {num} ({name}): update"
    assert (py.update(x), c.update(x)) == (False, False), f"case {num} ({name}): duplicate"


@pytest.mark.parametrize("seed", range(4))
def test_random_walk_around_the_edge_same_verdicts(seed: int) -> None:
    """Counters drawn around the oldest accepted one (highest - W +- 3), around the highest, and
    jumps of W - 1, W, W + 1 and one ring turn: both windows agree at every step."""
    rnd = random.Random(seed)
    py, c = both()
    highest = 0
    accepted = 0
    for _ in range(4_000):
        r = rnd.random()
        if r < 0.4:
            x = max(0, highest - W + rnd.randint(-3, 3))
        elif r < 0.8:
            x = max(0, highest + rnd.randint(-3, 3))
        else:
            x = highest + rnd.choice((W - 1, W, W + 1, RING))
        verdict = py.check(x)
        assert c.check(x) is verdict, f"check({x}) after highest {highest}"
        got = py.update(x)
        assert c.update(x) is got is verdict, f"update({x}) after highest {highest}"
        if got:
            accepted += 1
            highest = max(highest, x)
    assert 0 < accepted < 4_000
