"""Agent commands: `enclave enrol`, `enclave renew`.

Every agent command takes --state DIR (default $ENCLAVE_STATE, else /var/lib/enclave).
The private key's encryption passphrase comes from $ENCLAVE_KEY_PASSPHRASE, the systemd
credential enclave-key-passphrase, or else STATE/key.kek (created at enrolment).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from collections.abc import Sequence
from typing import IO

from enclave.agent.cli_common import guard, state_dir
from enclave.agent.enrol import enrol, renew, renew_if_due, renewal_due_at, resume
from enclave.agent.errors import AgentError
from enclave.agent.state import STATE_ENV

EXIT_PENDING = 3  # enrolment waits for approval


MAX_TOKEN_FILE_BYTES = 4096


def read_token_file(path: str, stdin: IO[str] | None = None) -> str:
    """The enrolment token in file `path` ("-": standard input), surrounding space removed."""
    try:
        if path == "-":
            text = (stdin or sys.stdin).read(MAX_TOKEN_FILE_BYTES + 1)
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read(MAX_TOKEN_FILE_BYTES + 1)
    except UnicodeDecodeError:
        raise AgentError(f"token file {path} is not text") from None
    if len(text) > MAX_TOKEN_FILE_BYTES:
        raise AgentError(f"token file {path} is too large for an enrolment token")
    token = text.strip()
    if not token:
        raise AgentError(f"token file {path} is empty")
    return token


def cmd_enrol(args: argparse.Namespace) -> int:
    state = state_dir(args)
    if args.token and args.token_file:
        raise AgentError("give either TOKEN or --token-file, not both")
    token = read_token_file(args.token_file) if args.token_file else args.token
    if args.resume:
        if token:
            raise AgentError("give either a token or --resume, not both")
        result = resume(state, wait=args.wait)
    elif not token:
        raise AgentError("an enrolment token is required (TOKEN, --token-file, or --resume)")
    else:
        result = enrol(token, state, hostname=args.hostname)
        if result.state == "pending" and args.wait > 0:
            result = resume(state, wait=args.wait)
    if args.json:
        print(json.dumps(result.as_json()))
    elif result.state == "pending":
        print(f"{result.name} is waiting for approval "
              f"(`enclave platform systems approve {result.name}`), then run "
              "`enclave enrol --resume`")
    else:
        print(result.name)
    return EXIT_PENDING if result.state == "pending" else 0


def cmd_renew(args: argparse.Namespace) -> int:
    state = state_dir(args)
    now = datetime.datetime.now(datetime.UTC)
    ident = renew(state) if args.force else renew_if_due(state, now)
    if ident is None:
        current = state.identity(now)
        print(f"{current.name}: certificate valid until {current.not_after:%Y-%m-%d %H:%M:%SZ}, "
              f"renewal due {renewal_due_at(current):%Y-%m-%d %H:%M:%SZ}")
    else:
        print(f"{ident.name}: renewed, valid until {ident.not_after:%Y-%m-%d %H:%M:%SZ}")
    return 0


def _state_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="DIR", default=None,
                   help=f"agent state directory (default: ${STATE_ENV} or /var/lib/enclave)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser(
        "enrol",
        help="enrol this host with a platform using an enrolment token",
        description="Generate this system's key pair (kept encrypted in the state directory), "
        "send a CSR to the platform pinned by the token, and store the issued certificate. "
        "Prints the system name. With a gated key the system stays pending: "
        "run `enclave enrol --resume` after approval (or pass --wait SECONDS to poll). "
        f"Exit status {EXIT_PENDING} means pending.",
    )
    p.add_argument("token", nargs="?",
                   help="enrolment token (enclave1-...); visible to other users in the process "
                   "list and kept in shell history: prefer --token-file")
    p.add_argument("--token-file", metavar="FILE",
                   help="read the enrolment token from FILE ('-': standard input)")
    _state_arg(p)
    p.add_argument("--hostname", help="name shown to administrators (default: this host's)")
    p.add_argument("--resume", action="store_true", help="fetch the certificate after approval")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="poll for approval up to this long (default: do not wait)")
    p.add_argument("--json", action="store_true", help="print name, overlay IP, state as JSON")
    p.set_defaults(func=guard(cmd_enrol))

    p = sub.add_parser("renew", help="renew this system's certificate if due (2/3 of lifetime)")
    _state_arg(p)
    p.add_argument("--force", action="store_true", help="renew now even if not due")
    p.set_defaults(func=guard(cmd_renew))

    from enclave.agent.cli_daemon import register as register_daemon

    register_daemon(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent commands without the other command groups (used by tests)."""
    parser = argparse.ArgumentParser(prog="enclave")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"])
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
