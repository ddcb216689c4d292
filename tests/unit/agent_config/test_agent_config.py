"""The agent's config.toml and options (enclave/agent/options.py): a typo, a value of the wrong
type or out of range, or a file that is not TOML stops `enclave up` (and `up --check-config`)
with one line naming the file or variable and the key, never a traceback; before, unknown keys
were ignored and wrong values failed later or silently turned into defaults."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from enclave.agent.options import (
    CONFIG_FILE,
    KEYS,
    AgentOptions,
    ConfigError,
    read_config_file,
)
from enclave.agent.state import StateDir
from enclave.configfile import MAX_CONFIG_BYTES
from enclave.spawn import enclave_argv

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "agent.config.toml"


def resolve(tmp_path: Path, config: str | None, env: dict[str, str] | None = None,
            cli: dict[str, object] | None = None) -> AgentOptions:
    if config is not None:
        (tmp_path / CONFIG_FILE).write_text(config)
    return AgentOptions.resolve(StateDir(tmp_path), cli or {}, env or {})


def test_a_typo_names_the_file_the_key_and_the_close_match(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        resolve(tmp_path, "port = 51820\nofload = false\n")
    text = str(err.value)
    assert str(tmp_path / CONFIG_FILE) in text
    assert "unknown key 'ofload'" in text and "did you mean 'offload'?" in text


def test_an_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'colour'") as err:
        resolve(tmp_path, 'colour = "blue"\n')
    assert "did you mean" not in str(err.value)
    assert all(key in str(err.value) for key in KEYS)


@pytest.mark.parametrize("config", ["port = [", "mtu = 1300\nmtu = 1400\n", "= 5\n",
                                    "port = 51820 51821\n"])
def test_a_file_that_is_not_toml_names_the_file(tmp_path: Path, config: str) -> None:
    with pytest.raises(ConfigError, match=f"config file {tmp_path / CONFIG_FILE} is invalid"):
        resolve(tmp_path, config)


def test_a_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_bytes(b'interface = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="is invalid"):
        resolve(tmp_path, None)


def test_an_oversized_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        resolve(tmp_path, None)


@pytest.mark.parametrize(("config", "message"), [
    ('port = "51820"\n', "port must be an integer"),
    ("port = true\n", "port must be an integer"),
    ("port = 1.5\n", "port must be an integer"),
    ('offload = "no"\n', "offload must be true or false"),
    ("dns = 0\n", "dns must be true or false"),
    ("interface = 5\n", "interface must be a string"),
    ("[threads]\nn = 2\n", "threads must be an integer"),
    ("metrics = [\"127.0.0.1:9101\"]\n", "metrics must be a string"),
])
def test_a_value_of_the_wrong_type_is_named(tmp_path: Path, config: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        resolve(tmp_path, config)
    assert str(tmp_path / CONFIG_FILE) in str(err.value)


@pytest.mark.parametrize(("config", "message"), [
    ("port = 0\n", "port must be 1..65535, got 0"),
    ("port = 70000\n", "port must be 1..65535, got 70000"),
    ("mtu = 100\n", "mtu must be 576..65535, got 100"),
    ("threads = 0\n", "threads must be 1.."),
    ('interface = "a/b"\n', "interface must be an interface name"),
    ('interface = "sixteen-chars-xx"\n', "interface must be an interface name"),
    ('interface = ""\n', "interface must be an interface name"),
    ('cipher = "des"\n', "unknown cipher 'des'"),
    ('metrics = "9101"\n', "metrics"),
])
def test_a_value_out_of_range_is_named(tmp_path: Path, config: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        resolve(tmp_path, config)
    assert str(tmp_path / CONFIG_FILE) in str(err.value)


@pytest.mark.parametrize(("env", "message"), [
    ({"ENCLAVE_AQM": "maybe"}, "environment variable ENCLAVE_AQM"),
    ({"ENCLAVE_PORT": "http"}, "environment variable ENCLAVE_PORT .port. must be an integer"),
    ({"ENCLAVE_MTU": "99999"}, "ENCLAVE_MTU .mtu. must be 576..65535"),
    ({"ENCLAVE_CIPHER": "rot13"}, "ENCLAVE_CIPHER .cipher.: unknown cipher"),
])
def test_a_bad_environment_variable_is_named(tmp_path: Path, env: dict[str, str],
                                             message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(tmp_path, None, env)


def test_a_bad_flag_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"option --port must be 1\.\.65535"):
        resolve(tmp_path, None, cli={"port": 0})


def test_flags_beat_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    opts = resolve(tmp_path, 'port = 1000\nmtu = 1300\ninterface = "ovl0"\naqm = false\n',
                   {"ENCLAVE_PORT": "2000", "ENCLAVE_MTU": "1350", "ENCLAVE_AQM": "on"},
                   {"port": 3000})
    assert (opts.port, opts.mtu, opts.interface, opts.aqm) == (3000, 1350, "ovl0", True)


def test_the_example_config_is_valid_and_shows_every_key() -> None:
    """examples/agent.config.toml: loads as it is, and names every key (set or commented)."""
    assert set(read_config_file(EXAMPLE)) <= set(KEYS)
    uncommented = tomllib.loads("\n".join(
        line.removeprefix("#") for line in EXAMPLE.read_text().splitlines()
        if line.startswith("#") and " = " in line and not line.startswith("# ")))
    shown = set(read_config_file(EXAMPLE)) | set(uncommented)
    assert shown == set(KEYS)


def run_up(state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(enclave_argv("up", "--state", str(state), "--check-config", *extra),
                          capture_output=True, text=True, timeout=60)


def test_up_check_config_reports_a_typo_in_one_line(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("prot = 51821\n")
    res = run_up(tmp_path)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"error: config file {tmp_path / CONFIG_FILE}: unknown key 'prot' (did you mean "
        f"'port'? known keys: {', '.join(KEYS)})"]


def test_up_check_config_prints_the_options_in_effect(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text('port = 51821\ninterface = "ovl0"\n')
    res = run_up(tmp_path, "--mtu", "1300")
    assert res.returncode == 0, res.stderr
    assert "port = 51821" in res.stdout and "interface = 'ovl0'" in res.stdout
    assert "mtu = 1300" in res.stdout
