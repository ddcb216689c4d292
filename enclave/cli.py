"""The `enclave` command.

Each command group lives in its own module, which exposes
``register(subparsers) -> None``: it adds its parsers and sets ``func`` (a callable taking the
parsed ``argparse.Namespace`` and returning an exit code) with ``parser.set_defaults(func=...)``.
This file only wires them together; add a module to COMMAND_MODULES to add commands.
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


def build_parser() -> argparse.ArgumentParser:
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
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
