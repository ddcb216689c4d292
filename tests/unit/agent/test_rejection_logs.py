"""Strangers' data is never logged unbounded: shown() cuts it short, RejectionLog keeps a budget
per key and in all; the agent's certificate check logs rejected INIT certificates within it."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from enclave.agent.wiring import PeerValidator
from enclave.logsafe import BURST, RejectionLog, shown
from tests.support.pki import Pki


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _records(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name]


def test_shown_cuts_long_values() -> None:
    assert shown("AB12C") == "'AB12C'"
    long = shown("x" * 100_000)
    assert len(long) < 80 and long.endswith("(100002 chars)")


def test_budget_per_key_global_and_window(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="t.rej")
    clock = Clock()
    rej = RejectionLog(logging.getLogger("t.rej"), period=10.0, burst=3, global_burst=5,
                       max_keys=4, clock=clock)
    assert [rej.note("a", "bad %s", i) for i in range(5)] == [True, True, True, False, False]
    assert rej.note("b", "bad b") and rej.note("b", "bad b")
    assert not rej.note("c", "bad c")  # the global budget (5) is spent
    for i in range(100):  # rotating keys: the table stays bounded
        rej.note(f"k{i}", "bad")
    assert len(rej) <= 4
    assert len(_records(caplog, "t.rej")) == 5
    clock.now = 10.5  # a new window: the suppressed count is told once, logging resumes
    assert rej.note("a", "bad again")
    msgs = _records(caplog, "t.rej")
    assert any("were not logged" in m for m in msgs) and msgs[-1] == "bad again"
    assert rej.suppressed == 2 + 1 + 100


def test_rejected_init_certificates_are_logged_within_a_budget(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="enclave.agent.wiring")
    pki, other = Pki("acme"), Pki("evil")
    _key, mine, _serial = pki.issue("AAAAA")
    # what PeerValidator reads from the running agent: the CA, the CRL, our identity
    agent = SimpleNamespace(ca=pki.ca, revoked=set(), identity=pki.validate(mine))
    validate = PeerValidator(agent)  # type: ignore[arg-type]
    _k, foreign, _s = other.issue("BBBBB")
    for i in range(300):  # junk and another CA's certificates, as a flood of INITs brings
        assert validate(bytes([0x30, 0x82]) + i.to_bytes(4, "big") * 50) is None
        assert validate(foreign) is None
    lines = [m for m in _records(caplog, "enclave.agent.wiring") if "rejected" in m]
    assert 1 <= len(lines) <= 2 * BURST
    assert max(len(m) for m in lines) < 400
    assert validate(mine) is not None  # the real thing still passes
