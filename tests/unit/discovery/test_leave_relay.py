"""Leaving the relay: while the best path is relayed, PathManager re-probes direct candidates
with a doubling back-off from RELAYED_REPROBE_MIN up to reprobe_interval; a confirmed then lost
direct path starts the back-off over.  Relay over TLS ranks after the UDP relay."""

from __future__ import annotations

import itertools
import random

import pytest

from enclave.discovery import PathManager, path_rank
from enclave.discovery.candidates import RANK_RELAY, RANK_RELAY_TLS
from enclave.discovery.paths import RELAYED_REPROBE_MIN
from tests.support.path_probes import PUB, REL, TLS, probes

pytestmark = pytest.mark.unit


def burst_starts(pm: PathManager, start: float, until: float) -> list[float]:
    """Times at which a re-probe burst begins (a probe after a pause of more than 0.5 s)."""
    last: float | None = None
    starts = []
    for t, _addr in probes(pm, start, until):
        if last is None or t - last > 0.5:
            starts.append(t)
        last = t
    return starts


def test_relay_tls_ranks_after_relay_udp() -> None:
    assert path_rank(REL) == RANK_RELAY and path_rank(TLS) == RANK_RELAY_TLS
    pm = PathManager([PUB, REL, TLS], 0.0, random.Random(1))
    pm.confirm(TLS.addr, 6.0)
    pm.confirm(REL.addr, 6.1)
    assert pm.best() == REL.addr
    assert set(pm.relay_candidates()) == {REL.addr, TLS.addr}


def test_relayed_reprobes_back_off_from_the_minimum() -> None:
    pm = PathManager([PUB, TLS], 0.0, random.Random(2), reprobe_interval=30.0)
    pm.confirm(TLS.addr, 6.0)  # relayed: the direct candidate never answered
    starts = burst_starts(pm, 6.0, 200.0)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) >= 6, starts
    assert gaps[0] < 30.0 / 4  # far sooner than the direct path's interval (old: 30 s)
    assert all(b >= a - 0.5 for a, b in itertools.pairwise(gaps)), gaps  # backs off
    assert max(gaps) <= 30.0 + 2.5  # never longer than the interval (+ a burst)


def test_lost_direct_path_restarts_the_back_off() -> None:
    pm = PathManager([PUB, TLS], 0.0, random.Random(3), reprobe_interval=30.0)
    pm.confirm(TLS.addr, 6.0)
    burst_starts(pm, 6.0, 120.0)  # backed off to the full interval by now
    pm.confirm(PUB.addr, 120.0)
    assert pm.best() == PUB.addr
    pm.unconfirm(PUB.addr)  # the direct path died: back on the relay
    assert pm.best() == TLS.addr
    starts = burst_starts(pm, 120.5, 140.0)
    assert starts and starts[0] - 120.5 <= RELAYED_REPROBE_MIN + 0.5, starts
