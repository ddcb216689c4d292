"""The `enclave` command.

Each command group lives in its own module, which exposes
``register(subparsers) -> None``: it adds its parsers and sets ``func`` (a callable taking the
parsed ``argparse.Namespace`` and returning an exit code) with ``parser.set_defaults(func=...)``.
This file only wires them together; add a module to COMMAND_MODULES to add commands, and its
command names to COMMANDS.  A run names its command first, so only that command's module is
imported (`enclave intent add` does not load the platform, bench or lab modules: the CLI's
start-up is part of how soon a second intent connects a pair); help without a command, or an
unknown one, registers every module.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from enclave import __version__

COMMAND_MODULES: tuple[str, ...] = (
    "enclave.info",
    "enclave.netlab.cli",
    "enclave.platform.cli",
    "enclave.agent.cli",
    "enclave.bench.cli",
    "enclave.service.cli",
)
# every top-level command and the module that registers it (tests/unit/cli checks the two agree)
COMMANDS: dict[str, str] = {
    "info": "enclave.info",
    "lab": "enclave.netlab.cli",
    "platform": "enclave.platform.cli",
    **dict.fromkeys(("enrol", "renew", "up", "status", "peers", "intent", "ping", "netcheck"),
                    "enclave.agent.cli"),
    "bench": "enclave.bench.cli",
    "service": "enclave.service.cli",
}


def command_modules(argv: Sequence[str] | None) -> tuple[str, ...]:
    """The modules to register for `argv`: the named command's alone, else all of them."""
    if argv is None:
        return COMMAND_MODULES
    args = list(argv)
    while args and args[0].startswith("--log-level"):  # the only top-level option with a value
        args = args[1:] if "=" in args[0] else args[2:]
    module = COMMANDS.get(args[0]) if args else None
    return COMMAND_MODULES if module is None else (module,)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv` (its command's module only), or for every command (None)."""
    parser = argparse.ArgumentParser(
        prog="enclave",
        description="Self-hostable peer-to-peer L2 network fabric.",
    )
    parser.add_argument("--version", action="version", version=f"enclave {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity on stderr (default: info)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in command_modules(argv):
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `enclave ... | head`: the reader went away; not an error of ours
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
