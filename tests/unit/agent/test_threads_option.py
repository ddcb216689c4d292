"""Data-plane workers: `--threads` > ENCLAVE_THREADS > config.toml `threads` > one per core up to
4; out-of-range values are refused; the limit is the compiled data plane's."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave import sysinfo
from enclave.agent.errors import AgentError
from enclave.agent.options import AgentOptions
from enclave.agent.state import StateDir
from enclave.agent.statusfmt import self_lines
from enclave.cli import build_parser


@pytest.mark.parametrize("cores, want", [(1, 1), (2, 2), (3, 3), (4, 4), (16, 4), (64, 4),
                                         (0, 1)])
def test_default_is_one_per_core_up_to_four(cores: int, want: int) -> None:
    assert sysinfo.default_threads(cores) == want


@pytest.mark.parametrize("env, config, cli, want", [
    ({}, "", {}, sysinfo.default_threads()),
    ({"ENCLAVE_THREADS": "3"}, "", {}, 3),
    ({}, "threads = 1\n", {}, 1),
    ({"ENCLAVE_THREADS": "2"}, "threads = 1\n", {}, 2),     # the environment beats the file
    ({"ENCLAVE_THREADS": "2"}, "", {"threads": 4}, 4),       # the flag wins
])
def test_threads_option(tmp_path: Path, env: dict[str, str],
                        config: str, cli: dict[str, object], want: int) -> None:
    if config:
        (tmp_path / "config.toml").write_text(config)
    assert AgentOptions.resolve(StateDir(tmp_path), cli, env).threads == want


@pytest.mark.parametrize("value", ["0", "-1", "65", "many"])
def test_bad_threads_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 value: str) -> None:
    monkeypatch.setenv("ENCLAVE_THREADS", value)
    with pytest.raises(AgentError, match=r"threads|invalid agent option"):
        AgentOptions.resolve(StateDir(tmp_path), {})


def test_limit_is_the_data_planes() -> None:
    fp = pytest.importorskip("enclave._fastpath")
    assert sysinfo.MAX_THREADS == fp.DATAPLANE_MAX_WORKERS


def test_up_has_the_threads_flag() -> None:
    parser = build_parser()
    assert parser.parse_args(["up", "--threads", "3"]).threads == 3
    assert parser.parse_args(["up"]).threads is None


def test_status_names_the_workers() -> None:
    status = {"name": "a", "dataplane": {"tap": "enclave0", "threads": 4, "cipher": "aes256gcm",
                                         "aqm": True}}
    assert "data plane   enclave0, 4 worker(s), cipher aes256gcm, aqm on" in self_lines(status)
    assert not any(line.startswith("data plane") for line in self_lines({"name": "a"}))
