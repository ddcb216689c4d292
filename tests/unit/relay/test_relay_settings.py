"""The relay's settings from the environment: CoDel at the relay and its socket buffer
(enclave.platform.relay.aqm_from_env / socket_buffer_from_env); bad values fall back to the
defaults with an error logged, never an exception."""

from __future__ import annotations

import pytest

from enclave._fastpath import RELAY_AQM_INTERVAL_NS, RELAY_AQM_TARGET_NS, RelayForwarder
from enclave.platform.relay import (
    AQM_INTERVAL_ENV,
    AQM_TARGET_ENV,
    SOCKET_BUFFER,
    SOCKET_BUFFER_ENV,
    aqm_from_env,
    socket_buffer_from_env,
)

DEFAULT = {"aqm_target_ns": RELAY_AQM_TARGET_NS, "aqm_interval_ns": RELAY_AQM_INTERVAL_NS}


@pytest.mark.parametrize(
    ("case", "target", "interval", "want"),
    [
        (1, None, None, DEFAULT),
        (2, "0", None, {"aqm_target_ns": 0, "aqm_interval_ns": RELAY_AQM_INTERVAL_NS}),
        (3, "500", "10000", {"aqm_target_ns": 500_000, "aqm_interval_ns": 10_000_000}),
        (4, "junk", None, DEFAULT),
        (5, "20000", "10000", DEFAULT),  # interval not above target
        (6, "-5", None, {"aqm_target_ns": 0, "aqm_interval_ns": RELAY_AQM_INTERVAL_NS}),
    ],
)
def test_aqm_from_env(monkeypatch: pytest.MonkeyPatch, case: int, target: str | None,
                      interval: str | None, want: dict[str, int]) -> None:
    for env, value in ((AQM_TARGET_ENV, target), (AQM_INTERVAL_ENV, interval)):
        if value is None:
            monkeypatch.delenv(env, raising=False)
        else:
            monkeypatch.setenv(env, value)
    assert aqm_from_env() == want, case


@pytest.mark.parametrize(
    ("case", "raw", "want"),
    [(1, None, SOCKET_BUFFER), (2, "262144", 262144), (3, "10", 1 << 16),
     (4, "1MB", SOCKET_BUFFER)],
)
def test_socket_buffer_from_env(monkeypatch: pytest.MonkeyPatch, case: int, raw: str | None,
                                want: int) -> None:
    if raw is None:
        monkeypatch.delenv(SOCKET_BUFFER_ENV, raising=False)
    else:
        monkeypatch.setenv(SOCKET_BUFFER_ENV, raw)
    assert socket_buffer_from_env() == want, case


def test_forwarder_rejects_bad_queue_settings() -> None:
    with pytest.raises(ValueError):
        RelayForwarder(0, aqm_target_ns=2000, aqm_interval_ns=1000)
    with pytest.raises(ValueError):
        RelayForwarder(0, punt_rate=0.0)
    with pytest.raises(ValueError):
        RelayForwarder(0, punt_burst=0.5)
