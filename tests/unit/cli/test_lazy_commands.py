"""`enclave COMMAND ...` imports only COMMAND's module (the CLI's start-up is part of how soon a
second `enclave intent add` connects a pair); help without a command lists every command."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from enclave.cli import COMMAND_MODULES, COMMANDS, build_parser, command_modules
from enclave.spawn import module_argv

OTHER_GROUPS = ("enclave.platform", "enclave.bench", "enclave.netlab", "enclave.service",
                "enclave.agent.netcheck")


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_commands_table_names_what_each_module_registers(module: str) -> None:
    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(module).register(sub)
    assert set(sub.choices) == {name for name, owner in COMMANDS.items() if owner == module}


@pytest.mark.parametrize(("argv", "want"), [
    (["intent", "add", "X"], ("enclave.agent.cli",)),
    (["--log-level", "debug", "up"], ("enclave.agent.cli",)),
    (["--log-level=debug", "platform", "serve"], ("enclave.platform.cli",)),
    (["bench"], ("enclave.bench.cli",)),
    ([], COMMAND_MODULES),
    (["--help"], COMMAND_MODULES),
    (["no-such-command"], COMMAND_MODULES),
])
def test_command_modules_for_argv(argv: list[str], want: tuple[str, ...]) -> None:
    assert command_modules(argv) == want


def test_intent_add_loads_no_other_command_group() -> None:
    code = ("import sys\n"
            "from enclave.cli import build_parser\n"
            "args = build_parser(['intent', 'add', 'X']).parse_args(['intent', 'add', 'X'])\n"
            "assert args.func is not None\n"
            f"print(sorted(m for m in sys.modules if m.startswith({OTHER_GROUPS!r})))\n")
    out = subprocess.run([sys.executable, "-P", "-c", code],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_help_without_a_command_lists_every_command() -> None:
    text = build_parser([]).format_help()
    for name in COMMANDS:
        assert name in text


def test_intent_help_runs_from_the_command_line() -> None:
    res = subprocess.run(module_argv("enclave", "intent", "add", "--help"), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "--expires" in res.stdout
