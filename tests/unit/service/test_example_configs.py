"""examples/agent.config.toml and examples/platform.config.toml list exactly the options the code
reads, with the code's defaults, so they cannot drift; the platform's config.toml is applied
under the environment's settings."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from enclave.agent.options import AgentOptions
from enclave.agent.state import StateDir
from enclave.platform.config import OPTIONS, ConfigError, apply_config
from enclave.platform.hub import ephemeral_grace_from_env
from enclave.platform.relay import relay_bind_from_env

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
ENV_LITERAL = re.compile(r'"(ENCLAVE_[A-Z0-9_]+)"')
COMMENTED_OPTION = re.compile(r"^#([a-z_]+) = ", re.MULTILINE)  # "#mtu = 1406": default off


def _keys(path: Path) -> tuple[set[str], set[str]]:
    """(keys set in the file, keys shown commented out as "#key = value")."""
    text = path.read_text()
    active = set(tomllib.loads(text))
    commented = set(COMMENTED_OPTION.findall(text))
    assert not active & commented, f"{path.name}: both set and commented: {active & commented}"
    for key in commented:  # the commented example values must parse as the key's TOML type
        line = next(ln for ln in text.splitlines() if ln.startswith(f"#{key} = "))
        tomllib.loads(line[1:])
    return active, commented


def test_agent_example_lists_every_option_and_nothing_else() -> None:
    active, commented = _keys(EXAMPLES / "agent.config.toml")
    known = {f.name for f in dataclasses.fields(AgentOptions)}
    listed = active | commented
    assert listed == known, f"unknown in example: {listed - known}; missing: {known - listed}"


def test_agent_example_values_are_the_defaults(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for field in dataclasses.fields(AgentOptions):
        monkeypatch.delenv(f"ENCLAVE_{field.name.upper()}", raising=False)
    (tmp_path / "config.toml").write_text((EXAMPLES / "agent.config.toml").read_text())
    assert AgentOptions.resolve(StateDir(tmp_path), {}) == AgentOptions()


def test_platform_example_lists_every_option_with_its_default() -> None:
    path = EXAMPLES / "platform.config.toml"
    active, commented = _keys(path)
    assert active | commented == set(OPTIONS)
    values = tomllib.loads(path.read_text())
    assert {key: OPTIONS[key].default for key in active} == values


def test_platform_config_fills_unset_environment_only(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.toml").write_text('ephemeral_grace = 42\nrelay = "off"\n')
    monkeypatch.delenv("ENCLAVE_PLATFORM_EPHEMERAL_GRACE", raising=False)
    monkeypatch.setenv("ENCLAVE_PLATFORM_RELAY", "127.0.0.1:3999")
    applied = apply_config(tmp_path)
    assert applied == ["ENCLAVE_PLATFORM_EPHEMERAL_GRACE"]
    assert ephemeral_grace_from_env() == 42  # config > default
    assert relay_bind_from_env() == ("127.0.0.1", 3999)  # environment > config


def test_platform_config_without_file_changes_nothing(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    assert apply_config(tmp_path, env) == [] and env == {}


@pytest.mark.parametrize(("text", "match"), [
    ("relay_port = 1\n", "unknown key 'relay_port'"),
    ("relay_pubic = \"x\"\n", "did you mean 'relay_public'"),
    ("ephemeral_grace = \"ten\"\n", "ephemeral_grace must be an integer"),
    ("ephemeral_grace = true\n", "ephemeral_grace must be an integer"),
    ("relay = 5\n", "relay must be a string"),
    ("relay = [\n", "is invalid"),
    ("\xff\n", "is invalid"),
])
def test_platform_config_refuses_bad_input_clearly(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "config.toml").write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError, match=match):
        apply_config(tmp_path, {})


def test_every_environment_variable_the_code_reads_is_in_an_example() -> None:
    """Environment-only settings are listed in the examples' headers; config keys are
    ENCLAVE_<KEY> (agent) or named above the key (platform)."""
    used = {name for path in (ROOT / "enclave").rglob("*.py")
            for name in ENV_LITERAL.findall(path.read_text())}
    assert "ENCLAVE_STATE" in used  # the scan sees the code
    text = (EXAMPLES / "agent.config.toml").read_text() + (
        EXAMPLES / "platform.config.toml").read_text()
    agent_keys = {f"ENCLAVE_{f.name.upper()}" for f in dataclasses.fields(AgentOptions)}
    missing = {name for name in used if name not in text and name not in agent_keys}
    assert not missing, f"environment variables not described in examples/: {sorted(missing)}"
