"""`--repeat N`: N whole runs of a bench folded into one report, every figure as median and spread.

    run 1 --+
    run 2 --+--> aggregate() --> one Report
    run N --+

* figures, matched by (key, cipher) in the order they first appear: overlay and raw are the
  medians of the runs' values, ratio the median of the per-run ratios (each run's overlay over
  the same run's raw path, never across runs); every sample is kept (Figure.*_samples) and
  ``runs`` says how many runs there were, so a figure some run did not measure shows it;
* crypto rows, matched by (cipher, size, impl, op): gbit_s and ns_per_frame are medians, the
  Gbit/s samples are kept with their min and max;
* stages: every run's, numbered (Stage.run), so the exit status covers all runs;
* paths: per cipher, the distinct paths the runs took, joined with ",";
* meta: the first run's, with ``repeat`` = N, ``lab_prefixes`` of all runs and ``runs``: each
  run's start time and load averages (RUN_META).

Each run is a whole run (its own lab, agents, platform; with --workdir DIR its own DIR/run-<i>,
see run_workdir), so start-up and set-up are measured N times too.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from enclave.bench.report import Figure, Report, Stage, median, spread

MAX_REPEAT = 50
RUN_META = ("started", "loadavg_start", "loadavg_end")  # kept for every run in meta["runs"]
T = TypeVar("T")


def check_repeat(n: int) -> int:
    """--repeat's value, or a ValueError."""
    if not 1 <= n <= MAX_REPEAT:
        raise ValueError(f"--repeat must be 1..{MAX_REPEAT}, got {n}")
    return n


def run_workdir(workdir: Path | None, run: int, n: int) -> Path | None:
    """--workdir for run ``run`` (1..n): DIR itself for a single run, DIR/run-<run> when there
    are several, so every run starts its lab, agents and platform in a directory of its own
    (no run finds the previous one's platform) and each run's files stay there to inspect."""
    if workdir is None or n == 1:
        return workdir
    return workdir / f"run-{run}"


def run_repeated(n: int, once: Callable[[Callable[[str], None], int], Report],
                 progress: Callable[[str], None]) -> Report:
    """Call ``once(step, run)`` for run = 1..n (each step text prefixed with "run i/n") and
    aggregate."""
    if n == 1:
        return once(progress, 1)

    def numbered(i: int) -> Callable[[str], None]:
        return lambda text: progress(f"run {i}/{n}: {text}")

    return aggregate([once(numbered(i), i) for i in range(1, n + 1)])


def aggregate(reports: Sequence[Report]) -> Report:
    """One report from several runs of the same bench (see the module docstring)."""
    if not reports:
        raise ValueError("nothing to aggregate")
    first = reports[0]
    meta = dict(first.meta)
    meta["repeat"] = len(reports)
    prefixes = [r.meta["lab_prefix"] for r in reports if r.meta.get("lab_prefix")]
    if prefixes:
        meta["lab_prefixes"] = prefixes
    meta["runs"] = [{k: r.meta[k] for k in RUN_META if k in r.meta} for r in reports]
    out = Report(meta=meta)
    for i, report in enumerate(reports, 1):
        out.stages += [Stage(s.name, s.status, s.detail, s.seconds, i) for s in report.stages]
    out.figures = _figures(reports)
    out.crypto = _crypto(reports)
    ciphers: list[str] = []
    for report in reports:
        ciphers += [c for c in report.paths if c not in ciphers]
    for cipher in ciphers:
        taken = []
        for report in reports:
            path = report.paths.get(cipher)
            if path is not None and path not in taken:
                taken.append(path)
        out.paths[cipher] = ",".join(taken) if taken else None
    return out


def _grouped(items: Iterable[T], ident: Callable[[T], Hashable]) -> list[list[T]]:
    """items grouped by ident(item), the groups in the order their first item appears."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(ident(item), []).append(item)
    return list(groups.values())


def _figures(reports: Sequence[Report]) -> list[Figure]:
    out = []
    for figs in _grouped((f for r in reports for f in r.figures), lambda f: (f.key, f.cipher)):
        base = figs[0]
        over = [f.overlay for f in figs if f.overlay is not None]
        raw = [f.raw for f in figs if f.raw is not None]
        ratio = [r for r in (f.ratio for f in figs) if r is not None]
        notes: list[str] = []
        for f in figs:
            if f.note and f.note not in notes:
                notes.append(f.note)
        out.append(Figure(base.key, base.group, base.label, base.unit, base.cipher,
                          overlay=median(over), raw=median(raw),
                          higher_is_better=base.higher_is_better, note=" | ".join(notes),
                          overlay_samples=over, raw_samples=raw, ratio_samples=ratio,
                          runs=len(reports)))
    return out


def _crypto(reports: Sequence[Report]) -> list[dict[str, Any]]:
    out = []
    for group in _grouped((row for r in reports for row in r.crypto),
                          lambda row: (row["cipher"], row["size"], row["impl"], row["op"])):
        gbit = [float(r["gbit_s"]) for r in group]
        lo, hi = spread(gbit)
        out.append({**group[0],
                    "frames": sum(int(r["frames"]) for r in group),
                    "seconds": sum(float(r["seconds"]) for r in group),
                    "gbit_s": median(gbit),
                    "ns_per_frame": median([float(r["ns_per_frame"]) for r in group]),
                    "samples": gbit, "min": lo, "max": hi})
    return out
