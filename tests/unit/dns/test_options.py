"""`enclave up` options for DNS and metrics: flag > ENCLAVE_DNS / ENCLAVE_METRICS > config.toml
> default (DNS on, metrics off); a bad metrics address is refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.agent.errors import AgentError
from enclave.agent.options import AgentOptions
from enclave.agent.state import StateDir


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StateDir:
    monkeypatch.delenv("ENCLAVE_DNS", raising=False)
    monkeypatch.delenv("ENCLAVE_METRICS", raising=False)
    return StateDir(tmp_path)


def test_defaults_dns_on_metrics_off(state: StateDir) -> None:
    opts = AgentOptions.resolve(state, {})
    assert (opts.dns, opts.metrics) == (True, None)


def test_config_file_turns_dns_off_and_metrics_on(state: StateDir) -> None:
    (state.root / "config.toml").write_text('dns = false\nmetrics = "127.0.0.1:9101"\n')
    opts = AgentOptions.resolve(state, {})
    assert (opts.dns, opts.metrics) == (False, "127.0.0.1:9101")


def test_environment_beats_config(state: StateDir, monkeypatch: pytest.MonkeyPatch) -> None:
    (state.root / "config.toml").write_text('dns = true\nmetrics = "127.0.0.1:9101"\n')
    monkeypatch.setenv("ENCLAVE_DNS", "0")
    monkeypatch.setenv("ENCLAVE_METRICS", "[::1]:9200")
    opts = AgentOptions.resolve(state, {})
    assert (opts.dns, opts.metrics) == (False, "[::1]:9200")


def test_flags_beat_environment(state: StateDir, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_METRICS", "127.0.0.1:9101")
    opts = AgentOptions.resolve(state, {"dns": False, "metrics": "0.0.0.0:9300"})
    assert (opts.dns, opts.metrics) == (False, "0.0.0.0:9300")


@pytest.mark.parametrize("bad", ["9101", "127.0.0.1", "127.0.0.1:0", "::1:9101"])
def test_bad_metrics_address_is_refused(state: StateDir, monkeypatch: pytest.MonkeyPatch,
                                        bad: str) -> None:
    monkeypatch.setenv("ENCLAVE_METRICS", bad)
    with pytest.raises(AgentError, match="metrics"):
        AgentOptions.resolve(state, {})
