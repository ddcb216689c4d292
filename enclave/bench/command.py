"""What the `enclave bench` commands share (cli.py, gateway.py): the cipher list, --repeat, the
console and progress bar, writing --json / --html, and the exit status. It sits below both.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from enclave.bench.report import NON_TTY_WIDTH, Report, render, to_html
from enclave.cipher import CIPHER_NAMES

if TYPE_CHECKING:
    from rich.console import Console

CIPHER_HELP = ("comma-separated ciphers, e.g. aes256gcm,aegis256,chacha20poly1305, or `all`: "
               "every cipher this machine's agent supports")
Command = Callable[[argparse.Namespace], int]


def supported_ciphers() -> list[str]:
    """The ciphers this machine's agent can run: the agent's cipher names (enclave.cipher) that
    the compiled fast path implements and this CPU can run (AES-based ones need AES-NI)."""
    # imported here: keeps `enclave` start-up fast (bench.crypto loads the compiled fast path)
    from enclave.bench.crypto import available_ciphers

    try:
        have = set(available_ciphers())
    except ImportError:  # no compiled fast path: the agent cannot run at all; name them anyway
        have = set(CIPHER_NAMES)
    return [c for c in CIPHER_NAMES if c in have]


def parse_ciphers(text: str | None, supported: Sequence[str]) -> list[str]:
    """--cipher's value as a list: comma-separated names in the order given, duplicates once;
    None, "all" (or the older "both") = every supported cipher. A name the agent does not know,
    or one this machine cannot run, is a ValueError that names the supported ones."""
    if text is None or text.strip().lower() in ("all", "both"):
        if not supported:
            raise ValueError("no cipher is supported on this machine")
        return list(supported)
    chosen: list[str] = []
    for raw in text.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name in ("all", "both"):
            raise ValueError(f"--cipher: {name!r} stands alone, not in a list")
        if name not in supported:
            why = ("not available on this machine" if name in CIPHER_NAMES
                   else "not a cipher this agent knows")
            raise ValueError(f"--cipher: {name!r} is {why}; supported here: "
                             f"{', '.join(supported) or 'none'} (or 'all')")
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ValueError(f"--cipher: no cipher given; supported here: {', '.join(supported)} "
                         "(or 'all')")
    return chosen


def ciphers(choice: str | None) -> list[str]:
    """The ciphers to measure for --cipher on this machine (see parse_ciphers)."""
    return parse_ciphers(choice, supported_ciphers())


def write_outputs(report: Report, args: argparse.Namespace) -> None:
    """The report as JSON to --json FILE and as HTML to --html FILE, where given (every
    command that writes a report has both options)."""
    if args.json:
        Path(args.json).write_text(report.to_json() + "\n")
    if args.html:
        Path(args.html).write_text(to_html(report))


def finish(report: Report, out: Console, args: argparse.Namespace) -> int:
    """The end of every bench command: the report drawn on out, written to --json / --html
    where given, and the command's exit status (exit_status)."""
    render(report, out)
    write_outputs(report, args)
    return exit_status(report)


def exit_status(report: Report) -> int:
    """0 when every stage ran or was skipped on request, else 1."""
    return 0 if all(s.status in ("ok", "skipped") for s in report.stages) else 1


def console() -> Console:
    """The console reports are drawn on; not a terminal (a log, a pipe) and no COLUMNS: wide
    enough that each figure stays on one row."""
    # imported here: keeps `enclave` start-up fast (rich is only needed to show a report)
    from rich.console import Console

    out = Console()
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(width=NON_TTY_WIDTH)
    return out


def with_progress(title: str, total: int,
                  run: Callable[[Callable[[str], None]], Report]) -> tuple[Report, Console]:
    """Call ``run(step)`` under a transient progress bar of ``total`` steps; the report and the
    console it drew on (render the report there)."""
    # imported here: keeps `enclave` start-up fast (rich is only needed to show a report)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    out = console()
    with Progress(TextColumn("{task.description:<40}"), BarColumn(), TimeElapsedColumn(),
                  console=out, transient=True) as bar:
        task = bar.add_task(title, total=total)

        def step(text: str) -> None:
            bar.update(task, advance=1, description=text)

        report = run(step)
    return report, out
