"""ENCLAVE_AQM_TARGET_US / ENCLAVE_AQM_INTERVAL_US: the CoDel knobs for measuring other links
reach DataPlane.tune as microseconds; anything but a positive integer is a clear error."""

from __future__ import annotations

import pytest

from enclave import _fastpath as fp
from enclave.dataplane.engine import aqm_tuning_from_env
from tests.support.fd_tap import socketpair_dataplane


def test_unset_means_the_compiled_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENCLAVE_AQM_TARGET_US", raising=False)
    monkeypatch.delenv("ENCLAVE_AQM_INTERVAL_US", raising=False)
    assert aqm_tuning_from_env() == {}
    with socketpair_dataplane(max_peers=2) as dp:
        d = dp.tune()
        assert d["aqm_target_us"] * 1000 == fp.AQM_TARGET_NS
        assert d["aqm_interval_us"] * 1000 == fp.AQM_INTERVAL_NS
        assert dp.tune(aqm_target_us=500, aqm_interval_us=50_000)["aqm_target_us"] == 500
        with pytest.raises(ValueError):
            dp.tune(aqm_target_us=0)


def test_values_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_AQM_TARGET_US", "500")
    monkeypatch.setenv("ENCLAVE_AQM_INTERVAL_US", "50000")
    assert aqm_tuning_from_env() == {"aqm_target_us": 500, "aqm_interval_us": 50_000}


@pytest.mark.parametrize("raw", ["0", "-5", "1.5", "2ms", " 7"])
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("ENCLAVE_AQM_TARGET_US", raw)
    with pytest.raises(ValueError, match="ENCLAVE_AQM_TARGET_US"):
        aqm_tuning_from_env()
