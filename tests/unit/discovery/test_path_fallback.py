"""PathManager decisions for relay first and fallback (enclave/discovery/paths.py), on an
injected clock: a confirmed relay does not stop the punch's give-up; path_failed forgets
every confirmation and probes the relays (also one added later) until one answers; while
relayed, re-probe bursts come at most RELAYED_REPROBE_MAX apart.  Numbered cases."""

from __future__ import annotations

import itertools
import random

import pytest

from enclave.discovery import PathManager
from enclave.discovery.paths import (
    FALLBACK_DURATION,
    FALLBACK_PROBE_INTERVAL,
    GIVE_UP_AFTER,
    RELAYED_REPROBE_MAX,
)
from tests.support.path_probes import PUB, REL, TLS, probes

pytestmark = pytest.mark.unit


def test_1_a_relayed_session_still_hears_that_the_punch_failed() -> None:
    pm = PathManager([PUB], 0.0, random.Random(1))
    pm.add_candidate(REL)
    pm.confirm(REL.addr, 0.05)  # relay first: the session runs over the relay at once
    assert pm.best() == REL.addr
    assert not pm.relay_due(GIVE_UP_AFTER - 0.01)
    assert pm.relay_due(GIVE_UP_AFTER)  # birthday probing's hook: the punch failed
    assert not pm.relay_due(GIVE_UP_AFTER + 1)  # once


def test_2_a_direct_path_means_the_punch_worked() -> None:
    pm = PathManager([PUB, REL], 0.0, random.Random(2))
    pm.confirm(REL.addr, 0.05)
    pm.confirm(PUB.addr, 0.3)
    assert pm.best() == PUB.addr
    assert not pm.relay_due(GIVE_UP_AFTER + 1)


def test_3_path_failed_forgets_every_confirmation_and_probes_the_relays() -> None:
    pm = PathManager([PUB, REL], 0.0, random.Random(3))
    pm.confirm(REL.addr, 0.05)
    pm.confirm(PUB.addr, 0.3)
    probes(pm, 0.3, 100.0)  # settle: the initial punch is over
    pm.path_failed(PUB.addr, 100.0)
    assert pm.best() is None  # the old relay confirmation is stale too: it must answer
    got = probes(pm, 100.0, 101.0)
    rel_times = [t for t, a in got if a == REL.addr]
    assert rel_times[0] == 100.0
    gaps = [b - a for a, b in itertools.pairwise(rel_times)]
    assert gaps and all(g == pytest.approx(FALLBACK_PROBE_INTERVAL) for g in gaps), gaps
    assert any(a == PUB.addr for _, a in got)  # the direct path is punched again too


def test_4_a_relay_added_during_the_fallback_is_probed_and_an_answer_ends_it() -> None:
    pm = PathManager([PUB, REL], 0.0, random.Random(4))
    pm.confirm(PUB.addr, 0.3)
    probes(pm, 0.3, 100.0)
    pm.path_failed(PUB.addr, 100.0)
    probes(pm, 100.0, 100.3)
    pm.add_candidate(TLS)  # the relay over TLS registered after the failure
    got = probes(pm, 100.3, 101.0)
    assert any(a == TLS.addr for _, a in got)
    pm.confirm(TLS.addr, 101.0)
    assert pm.best() == TLS.addr
    after = probes(pm, 101.0, 102.0)
    assert not any(a in (REL.addr, TLS.addr) for _, a in after)  # relays no longer probed


def test_5_the_fallback_ends_after_its_duration_when_nothing_answers() -> None:
    pm = PathManager([PUB, REL], 0.0, random.Random(5))
    pm.confirm(PUB.addr, 0.3)
    probes(pm, 0.3, 100.0)
    pm.path_failed(PUB.addr, 100.0)
    got = probes(pm, 100.0, 100.0 + 3 * FALLBACK_DURATION)
    rel = [t for t, a in got if a == REL.addr]
    assert rel and max(rel) < 100.0 + FALLBACK_DURATION


def test_6_relayed_reprobes_stay_close_together() -> None:
    pm = PathManager([PUB, REL], 0.0, random.Random(6), reprobe_interval=30.0)
    pm.confirm(REL.addr, 0.05)
    got = [t for t, a in probes(pm, 0.05, 120.0) if a == PUB.addr and t > GIVE_UP_AFTER + 1]
    gaps = [b - a for a, b in itertools.pairwise(got)]
    assert got and max(gaps) <= RELAYED_REPROBE_MAX + 0.25, max(gaps)  # + a probe round
