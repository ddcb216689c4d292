"""What the `enclave bench` commands share (cli.py, gateway.py): the cipher choice, the console and
progress bar, writing --json / --html, and the exit status. It sits below both.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from enclave.bench.report import Report, to_html

if TYPE_CHECKING:
    from rich.console import Console

CIPHER_CHOICES = ("aes256gcm", "chacha20poly1305", "both")
Command = Callable[[argparse.Namespace], int]


def ciphers(choice: str | None) -> list[str]:
    """The ciphers to measure for --cipher (None or "both": every one this machine has)."""
    # imported here: keeps `enclave` start-up fast (bench.crypto loads the compiled fast path)
    from enclave.bench.crypto import available_ciphers

    try:
        have = available_ciphers()
    except ImportError:
        have = ["aes256gcm", "chacha20poly1305"]
    if choice in (None, "both"):
        return have
    if choice not in have:
        raise ValueError(f"cipher {choice} is not available here (have: {', '.join(have)})")
    return [str(choice)]


def write_outputs(report: Report, args: argparse.Namespace) -> None:
    """The report as JSON to --json FILE and as HTML to --html FILE, where given."""
    if getattr(args, "json", None):
        Path(args.json).write_text(report.to_json() + "\n")
    if getattr(args, "html", None):
        Path(args.html).write_text(to_html(report))


def exit_status(report: Report) -> int:
    """0 when every stage ran or was skipped on request, else 1."""
    return 0 if all(s.status in ("ok", "skipped") for s in report.stages) else 1


def console() -> Console:
    # imported here: keeps `enclave` start-up fast (rich is only needed to show a report)
    from rich.console import Console

    return Console()


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
