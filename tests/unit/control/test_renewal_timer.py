"""The agent's renewal timer: wakes at the certificate's renewal due time or the periodic check,
whichever comes first; retries a due-but-failed renewal after RENEW_RETRY."""

from __future__ import annotations

import datetime
import ipaddress

import pytest

from enclave.agent.daemon import (
    RENEW_CHECK,
    RENEW_CHECK_ENV,
    RENEW_RETRY,
    RENEW_SLACK,
    renew_check_from_env,
    renewal_sleep,
)
from enclave.cert.identity import SystemIdentity

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _ident(lifetime: float) -> SystemIdentity:
    # notBefore is backdated by a minute, as the CA does: due at 2/3 of (60 s + lifetime)
    return SystemIdentity("V88RY", "acme", ipaddress.IPv4Address("100.64.0.7"), 10,
                          b"\x02\0\0\0\0\x07", (), b"\0" * 32, 1,
                          T0 - datetime.timedelta(seconds=60),
                          T0 + datetime.timedelta(seconds=lifetime))


def test_short_lived_cert_wakes_at_due_time() -> None:
    ident = _ident(60)  # span 120 s -> due at T0 + 20 s
    assert renewal_sleep(ident, T0, RENEW_CHECK) == pytest.approx(20 + RENEW_SLACK)
    later = T0 + datetime.timedelta(seconds=15)
    assert renewal_sleep(ident, later, RENEW_CHECK) == pytest.approx(5 + RENEW_SLACK)


def test_long_lived_cert_uses_periodic_check() -> None:
    assert renewal_sleep(_ident(30 * 86400), T0, RENEW_CHECK) == RENEW_CHECK
    assert renewal_sleep(_ident(30 * 86400), T0, 7.0) == 7.0


def test_overdue_renewal_is_retried_not_spun() -> None:
    ident = _ident(60)
    past_due = T0 + datetime.timedelta(seconds=25)
    assert renewal_sleep(ident, past_due, RENEW_CHECK) == RENEW_RETRY
    assert renewal_sleep(ident, past_due, 2.0) == 2.0
    expired = T0 + datetime.timedelta(days=3)
    assert renewal_sleep(ident, expired, RENEW_CHECK) == RENEW_RETRY


@pytest.mark.parametrize(("raw", "want"), [
    ("", RENEW_CHECK), ("120", 120.0), ("0.2", 1.0), ("-5", 1.0), ("soon", RENEW_CHECK),
])
def test_renew_check_env(monkeypatch: pytest.MonkeyPatch, raw: str, want: float) -> None:
    monkeypatch.setenv(RENEW_CHECK_ENV, raw)
    assert renew_check_from_env() == want
