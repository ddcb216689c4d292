"""The data plane's AQM option: `--no-aqm` > ENCLAVE_AQM > config.toml `aqm` > on, and the
`enclave up` flag that sets it."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.agent.options import AgentOptions
from enclave.agent.state import StateDir
from enclave.cli import build_parser


@pytest.mark.parametrize("env, config, cli, want", [
    ({}, "", {}, True),
    ({"ENCLAVE_AQM": "0"}, "", {}, False),
    ({"ENCLAVE_AQM": "false"}, "", {}, False),
    ({}, "aqm = false\n", {}, False),
    ({"ENCLAVE_AQM": "1"}, "aqm = false\n", {}, True),      # the environment beats the file
    ({"ENCLAVE_AQM": "1"}, "", {"aqm": False}, False),       # the flag wins
])
def test_aqm_option(tmp_path: Path, env: dict[str, str],
                    config: str, cli: dict[str, object], want: bool) -> None:
    if config:
        (tmp_path / "config.toml").write_text(config)
    assert AgentOptions.resolve(StateDir(tmp_path), cli, env).aqm is want


def test_up_has_the_no_aqm_flag() -> None:
    parser = build_parser()
    assert parser.parse_args(["up", "--no-aqm"]).no_aqm is True
    assert parser.parse_args(["up"]).no_aqm is False
