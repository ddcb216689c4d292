"""What the agent's command modules (agent/cli.py, cli_daemon.py, cli_diag.py) share: the
Command type, the guard that turns the agent's errors into "error: ..." and exit status 1, and
the --state directory."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from enclave.agent.errors import AgentError
from enclave.agent.state import StateDir, resolve_state_dir
from enclave.cert.errors import CertificateError, KeyStoreError

Command = Callable[[argparse.Namespace], int]
AGENT_ERRORS: tuple[type[Exception], ...] = (AgentError, KeyStoreError, CertificateError, OSError)


def guard(func: Command, *more: type[Exception]) -> Command:
    """func, with AGENT_ERRORS (and ``more``) printed as "error: ..." on stderr and exit 1."""
    errors = AGENT_ERRORS + more

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except errors as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def state_dir(args: argparse.Namespace) -> StateDir:
    """The agent's state directory: --state, else $ENCLAVE_STATE, else the default."""
    return StateDir(resolve_state_dir(args.state))
