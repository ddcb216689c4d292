"""What a bench run found, and its three renderings: rich table, JSON, self-contained HTML.

A Figure is one number measured over the overlay and, where it exists, the same flow over the raw
path (no overlay) in the same run; ratio = overlay / raw. A figure that was not measured is None,
never a guess. Stages record what ran, what was unavailable and why.

With ``--repeat N`` (enclave.bench.repeat) a figure holds every run's values as samples:
overlay and raw are their medians, ratio the median of the per-run ratios (each run's overlay
over the same run's raw), and tables show the spread as ``median [min-max]``.

JSON (``Report.to_json()``)::

    {"schema": "enclave-bench/1", "meta": {..., "repeat": N},
     "stages": [{"name", "status", "detail", "seconds", "run"}],
     "paths": {"aes256gcm": "direct-udp", ...},
     "figures": [{"id", "key", "group", "label", "unit", "cipher", "overlay", "raw", "ratio",
                  "higher_is_better", "note", "runs",
                  "value", "samples", "min", "max",        # the headline: overlay, else raw
                  "raw_samples", "raw_min", "raw_max", "ratio_samples", "ratio_min",
                  "ratio_max"}],
     "crypto": [{"cipher", "size", "impl", "op", "gbit_s", "ns_per_frame", "samples", "min",
                 "max"}]}
"""

from __future__ import annotations

import html
import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = "enclave-bench/1"
NON_TTY_WIDTH = 200  # columns of the rich tables when stdout is not a terminal
STAGE_STATUSES = ("ok", "unavailable", "failed", "skipped")


def median(values: Sequence[float]) -> float | None:
    """The median of the samples (None for none)."""
    return statistics.median(values) if values else None


def spread(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(min, max) of the samples ((None, None) for none)."""
    return (min(values), max(values)) if values else (None, None)


@dataclass
class Figure:
    """One figure. ``overlay``/``raw`` are one run's values, or with samples (--repeat) the
    medians of them; the *_samples lists are empty for a single run."""

    key: str
    group: str  # throughput | udp | latency | setup | cpu | memory | reference
    label: str
    unit: str
    cipher: str | None = None
    overlay: float | None = None
    raw: float | None = None
    higher_is_better: bool = True
    note: str = ""
    overlay_samples: list[float] = field(default_factory=list)
    raw_samples: list[float] = field(default_factory=list)
    ratio_samples: list[float] = field(default_factory=list)
    runs: int = 1

    @property
    def ratio(self) -> float | None:
        if self.ratio_samples:
            return median(self.ratio_samples)
        if self.overlay is None or self.raw is None or self.raw == 0:
            return None
        return self.overlay / self.raw

    @property
    def ident(self) -> str:
        """Unique within a report: the key, and the cipher where the figure has one."""
        return self.key if self.cipher is None else f"{self.key}.{self.cipher}"

    def series(self) -> tuple[list[float], list[float], list[float]]:
        """The samples behind overlay, raw and ratio (a single run: its own values)."""
        if self.runs > 1:
            return self.overlay_samples, self.raw_samples, self.ratio_samples
        ratio = self.ratio
        return ([] if self.overlay is None else [self.overlay],
                [] if self.raw is None else [self.raw],
                [] if ratio is None else [ratio])

    def as_json(self) -> dict[str, Any]:
        over, raw, ratio = self.series()
        head = over if self.overlay is not None else raw
        out = {"id": self.ident, **{k: v for k, v in asdict(self).items()
                                    if not k.endswith("_samples")}}
        out["ratio"] = self.ratio
        out["value"] = self.overlay if self.overlay is not None else self.raw
        out["samples"] = head
        out["min"], out["max"] = spread(head)
        out["raw_samples"] = raw
        out["raw_min"], out["raw_max"] = spread(raw)
        out["ratio_samples"] = ratio
        out["ratio_min"], out["ratio_max"] = spread(ratio)
        return out


@dataclass
class Stage:
    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0
    run: int = 1  # which of --repeat N runs

    def __post_init__(self) -> None:
        if self.status not in STAGE_STATUSES:
            raise ValueError(f"stage status must be one of {STAGE_STATUSES}, got {self.status!r}")


@dataclass
class Report:
    meta: dict[str, Any] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    crypto: list[dict[str, Any]] = field(default_factory=list)
    paths: dict[str, str | None] = field(default_factory=dict)

    def stage(self, name: str, status: str, detail: str = "", seconds: float = 0.0) -> Stage:
        st = Stage(name, status, detail, round(seconds, 3))
        self.stages.append(st)
        return st

    def figure(self, key: str, cipher: str | None = None) -> Figure | None:
        for f in self.figures:
            if f.key == key and f.cipher == cipher:
                return f
        return None

    def as_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "meta": self.meta,
            "stages": [asdict(s) for s in self.stages],
            "paths": self.paths,
            "figures": [f.as_json() for f in self.figures],
            "crypto": self.crypto,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_json(), indent=2, sort_keys=False)


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in ("%",):
        return f"{value:.2f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value else "0"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt_spread(value: float | None, samples: Sequence[float], runs: int, unit: str = "",
               ratio: bool = False) -> str:
    """``value`` with, over several samples, ``[min-max]`` (and ``n/N`` when runs lacked it)."""
    def one(v: float | None) -> str:
        return fmt_ratio(v) if ratio else fmt(v, unit)

    text = one(value)
    if value is None:
        return text
    if len(samples) > 1:
        lo, hi = spread(samples)
        text += f" [{one(lo)}-{one(hi)}]"
    if len(samples) < runs:
        text += f" ({len(samples)}/{runs})"
    return text


def figure_cells(f: Figure) -> tuple[str, str, str]:
    """The overlay, raw and ratio cells of a figure's table row (spread shown over runs)."""
    over, raw, ratio = f.series()
    return (fmt_spread(f.overlay, over, f.runs, f.unit), fmt_spread(f.raw, raw, f.runs, f.unit),
            fmt_spread(f.ratio, ratio, f.runs, ratio=True))


def gbit_cell(row: dict[str, Any]) -> str:
    """A crypto row's Gbit/s (median [min-max] over its samples when repeated)."""
    samples = row.get("samples") or [row["gbit_s"]]
    return fmt_spread(row["gbit_s"], samples, len(samples))


# -- rich --------------------------------------------------------------------------------------


def render(report: Report, console: Any = None) -> None:
    """Print stages, figures and crypto rows as rich tables."""
    # imported here: keeps `enclave` start-up fast (rich is only needed to show a report)
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console = Console(width=NON_TTY_WIDTH)  # a log or a pipe: wide rows, not wrapped
    stages = Table(title="enclave bench: stages", title_justify="left")
    runs = max((st.run for st in report.stages), default=1)
    for col in (("run",) if runs > 1 else ()) + ("stage", "status", "seconds", "detail"):
        stages.add_column(col)
    colours = {"ok": "green", "unavailable": "yellow", "failed": "red", "skipped": "dim"}
    for st in report.stages:
        stages.add_row(*((str(st.run),) if runs > 1 else ()), st.name,
                       f"[{colours[st.status]}]{st.status}[/]", f"{st.seconds:.1f}",
                       html_free(st.detail))
    console.print(stages)
    if report.figures:
        title = "overlay vs raw path" + html_free(
            f" (median [min-max] of {runs} runs)" if runs > 1 else "")
        table = Table(title=title, title_justify="left")
        for col, just in (("figure", "left"), ("cipher", "left"), ("overlay", "right"),
                          ("raw", "right"), ("ratio", "right"), ("unit", "left"),
                          ("note", "left")):
            table.add_column(col, justify=just)  # type: ignore[arg-type]
        for f in report.figures:
            table.add_row(html_free(f.label), f.cipher or "-",
                          *(html_free(c) for c in figure_cells(f)), f.unit, html_free(f.note))
        console.print(table)
    if report.crypto:
        table = Table(title="AEAD in process (one core)", title_justify="left")
        for col in ("cipher", "op", "size B", "implementation", "Gbit/s", "ns/frame"):
            table.add_column(col, justify="left" if col in ("cipher", "op", "implementation")
                             else "right")
        for row in report.crypto:
            table.add_row(row["cipher"], row["op"], str(row["size"]), row["impl"],
                          html_free(gbit_cell(row)), f"{row['ns_per_frame']:.0f}")
        console.print(table)


def html_free(text: str) -> str:
    """Text safe for rich markup (square brackets escaped)."""
    # imported here: keeps `enclave` start-up fast (rich is only needed to show a report)
    from rich.markup import escape

    return escape(text)


# -- HTML + SVG --------------------------------------------------------------------------------

_COLOURS = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]


Bar = tuple[float | None, list[float]]  # (median or the one value, the samples behind it)


def svg_throughput_chart(report: Report) -> str:
    """Grouped horizontal bars: per throughput flow, raw then each cipher's overlay (Gbit/s);
    over repeated runs each bar is the median with a whisker from the lowest to the highest
    run."""
    flows: list[str] = []
    raw: dict[str, Bar] = {}
    over: dict[tuple[str, str], Bar] = {}
    labels: dict[str, str] = {}
    ciphers: list[str] = []
    for f in report.figures:
        if f.group != "throughput":
            continue
        if f.key not in labels:
            flows.append(f.key)
            labels[f.key] = f.label
        over_samples, raw_samples, _ = f.series()
        if f.raw is not None:
            raw[f.key] = (f.raw, raw_samples)
        if f.cipher is not None:
            if f.cipher not in ciphers:
                ciphers.append(f.cipher)
            over[(f.key, f.cipher)] = (f.overlay, over_samples)
    series = ["raw", *ciphers]
    values: list[float] = [v for bar in [*raw.values(), *over.values()]
                           for v in (bar[0], *bar[1]) if v is not None]
    vmax = max(values) if values else 1.0
    vmax = vmax if vmax > 0 else 1.0
    bar_h, gap, label_w, plot_w = 14, 10, 210, 460
    group_h = bar_h * len(series) + gap
    height = 40 + group_h * max(1, len(flows)) + 20 * len(series)
    width = label_w + plot_w + 150
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" '
           'role="img" aria-label="throughput per flow, raw vs overlay">']
    out.append(f'<text x="4" y="14" font-size="13" font-weight="bold">Throughput (Gbit/s, '
               f'receiver side), max {vmax:.2f}</text>')
    y = 30
    for key in flows:
        out.append(f'<text x="4" y="{y + group_h / 2:.0f}">{html.escape(labels[key])}</text>')
        for i, name in enumerate(series):
            value, samples = (raw.get(key) if name == "raw" else over.get((key, name))) \
                or (None, [])
            colour = _COLOURS[i % len(_COLOURS)]
            by = y + i * bar_h
            if value is None:
                out.append(f'<text x="{label_w + 4}" y="{by + bar_h - 3}" fill="{colour}">'
                           f'{html.escape(name)}: not measured</text>')
                continue
            w = max(1.0, plot_w * value / vmax)
            out.append(f'<rect class="bar" data-series="{html.escape(name)}" '
                       f'data-flow="{html.escape(key)}" data-value="{value:.6g}" '
                       f'x="{label_w}" y="{by}" width="{w:.1f}" height="{bar_h - 2}" '
                       f'fill="{colour}"/>')
            text = f"{value:.2f}"
            if len(samples) > 1:
                lo, hi = min(samples), max(samples)
                x0, x1 = label_w + plot_w * lo / vmax, label_w + plot_w * hi / vmax
                mid = by + (bar_h - 2) / 2
                out.append(f'<line class="whisker" data-series="{html.escape(name)}" '
                           f'data-flow="{html.escape(key)}" '
                           f'data-samples="{",".join(f"{v:.6g}" for v in samples)}" '
                           f'x1="{x0:.1f}" y1="{mid:.1f}" x2="{x1:.1f}" y2="{mid:.1f}" '
                           'stroke="#000" stroke-width="1.5"/>')
                text += f" [{lo:.2f}-{hi:.2f}]"
                w = max(w, plot_w * hi / vmax)
            out.append(f'<text x="{label_w + w + 4:.1f}" y="{by + bar_h - 3}">'
                       f'{text}</text>')
        y += group_h
    for i, name in enumerate(series):
        ly = y + 10 + 20 * i
        colour = _COLOURS[i % len(_COLOURS)]
        out.append(f'<rect x="{label_w}" y="{ly}" width="12" height="12" fill="{colour}"/>')
        label = "raw path (no overlay)" if name == "raw" else f"overlay, {name}"
        out.append(f'<text x="{label_w + 18}" y="{ly + 10}">{html.escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def to_html(report: Report) -> str:
    """One self-contained page: chart (inline SVG), figures, stages. No scripts, no network."""
    meta_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in report.meta.items()
    )
    stage_rows = "".join(
        f"<tr><td>{s.run}</td><td>{html.escape(s.name)}</td><td class='{s.status}'>{s.status}</td>"
        f"<td>{s.seconds:.1f}</td><td>{html.escape(s.detail)}</td></tr>"
        for s in report.stages
    )
    fig_rows = "".join(
        f"<tr><td>{html.escape(f.label)}</td><td>{html.escape(f.cipher or '-')}</td>"
        + "".join(f"<td>{html.escape(cell)}</td>" for cell in figure_cells(f))
        + f"<td>{html.escape(f.unit)}</td><td>{html.escape(f.note)}</td></tr>"
        for f in report.figures
    )
    crypto_rows = "".join(
        f"<tr><td>{html.escape(r['cipher'])}</td><td>{html.escape(r['op'])}</td>"
        f"<td>{r['size']}</td><td>{html.escape(r['impl'])}</td><td>{gbit_cell(r)}</td>"
        f"<td>{r['ns_per_frame']:.0f}</td></tr>"
        for r in report.crypto
    )
    crypto = (
        "<h2>AEAD in process</h2><table><tr><th>cipher</th><th>op</th><th>size B</th>"
        f"<th>implementation</th><th>Gbit/s</th><th>ns/frame</th></tr>{crypto_rows}</table>"
        if report.crypto else ""
    )
    runs = int(report.meta.get("repeat", 1) or 1)
    figures_caption = html.escape(
        f"Median [lowest-highest] of {runs} runs; ratio: the median of the per-run ratios "
        "(each run's overlay over the same run's raw path)." if runs > 1 else
        "One run; ratio = overlay / raw path of the same run.")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>enclave bench</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 13px; }}
.ok {{ color: #2a2; }} .unavailable {{ color: #b80; }} .failed {{ color: #c22; }}
.skipped {{ color: #888; }}
</style></head><body>
<h1>enclave bench</h1>
<table>{meta_rows}</table>
<h2>Throughput: overlay vs raw path</h2>
{svg_throughput_chart(report)}
<h2>Figures</h2>
<p>{figures_caption}</p>
<table><tr><th>figure</th><th>cipher</th><th>overlay</th><th>raw</th><th>ratio</th>
<th>unit</th><th>note</th></tr>{fig_rows}</table>
{crypto}
<h2>Stages</h2>
<table><tr><th>run</th><th>stage</th><th>status</th><th>seconds</th><th>detail</th></tr>
{stage_rows}</table>
</body></html>
"""
