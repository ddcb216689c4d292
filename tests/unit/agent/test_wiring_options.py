"""`enclave up` wiring without a lab: the refusal without the compiled data plane, and how the
data-plane options resolve (CLI > ENCLAVE_* > config.toml > defaults)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from enclave.agent.errors import AgentError
from enclave.agent.options import AgentOptions
from enclave.agent.state import StateDir
from enclave.agent.wiring import load_fastpath, off_loop


def test_refuses_without_the_compiled_data_plane(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "enclave.dataplane.engine", None)  # import fails
    with pytest.raises(AgentError) as err:
        load_fastpath()
    text = str(err.value)
    assert "enclave._fastpath" in text and "build_ext" in text and "--no-tap" in text


def test_loads_the_compiled_data_plane() -> None:
    engine = load_fastpath()
    assert hasattr(engine, "DataPlane")


@pytest.mark.parametrize("env, cli, want", [
    ({}, {}, True),
    ({"ENCLAVE_OFFLOAD": "0"}, {}, False),
    ({"ENCLAVE_OFFLOAD": "false"}, {}, False),
    ({}, {"offload": False}, False),
    ({"ENCLAVE_OFFLOAD": "1"}, {"offload": False}, False),  # the flag wins
])
def test_offload_option(tmp_path: Path, env: dict[str, str], cli: dict[str, object],
                        want: bool) -> None:
    assert AgentOptions.resolve(StateDir(tmp_path), cli, env).offload is want


def test_config_file_and_cli_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("ENCLAVE_INTERFACE", "ENCLAVE_MTU", "ENCLAVE_CIPHER", "ENCLAVE_PORT"):
        monkeypatch.delenv(k, raising=False)
    (tmp_path / "config.toml").write_text(
        'interface = "ovl0"\nmtu = 1300\ncipher = "chacha20poly1305"\noffload = false\n')
    opts = AgentOptions.resolve(StateDir(tmp_path), {})
    assert (opts.interface, opts.mtu, opts.cipher, opts.offload) == (
        "ovl0", 1300, "chacha20poly1305", False)
    monkeypatch.setenv("ENCLAVE_MTU", "1200")
    opts = AgentOptions.resolve(StateDir(tmp_path), {"interface": "x0"})
    assert (opts.interface, opts.mtu) == ("x0", 1200)
    (tmp_path / "config.toml").write_text("mtu = [broken")
    with pytest.raises(AgentError, match="config file"):
        AgentOptions.resolve(StateDir(tmp_path), {})


def test_off_loop_returns_and_raises() -> None:
    assert off_loop(lambda: 41 + 1) == 42
    with pytest.raises(ZeroDivisionError):
        off_loop(lambda: 1 // 0)
