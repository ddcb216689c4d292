"""`enclave bench --repeat N`: runs folded into one report, every figure as median and spread
(JSON value/samples/min/max, tables median [min-max], the chart's whiskers)."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from enclave.bench.repeat import aggregate, check_repeat, run_repeated
from enclave.bench.report import Figure, Report, render, svg_throughput_chart, to_html


def one_run(i: int, tcp: tuple[float | None, float], rtt: float, gbit: float,
            path: str = "direct-udp", status: str = "ok") -> Report:
    r = Report(meta={"version": "x", "lab_prefix": f"enl-{i}-", "started": f"t{i}"})
    r.stage("lab", "ok")
    r.stage("flows overlay (aes256gcm)", status)
    r.paths["aes256gcm"] = path
    r.figures += [
        Figure("tcp1_ab", "throughput", "TCP 1 stream a1->b1", "Gbit/s", "aes256gcm",
               tcp[0], tcp[1], note=f"{i} retransmits"),
        Figure("rtt_idle_p50", "latency", "RTT p50 idle", "us", "aes256gcm", rtt, 100.0,
               higher_is_better=False, note="20/20 replies"),
    ]
    r.crypto = [{"cipher": "aes256gcm", "op": "seal", "size": 1400, "impl": "fastpath-batch",
                 "frames": 100, "seconds": 0.1, "gbit_s": gbit, "ns_per_frame": 1000.0 / gbit}]
    return r


RUNS = [one_run(1, (4.0, 10.0), 300.0, 12.0),
        one_run(2, (3.0, 5.0), 500.0, 14.0, path="relay", status="failed"),
        one_run(3, (5.0, 12.0), 400.0, 13.0)]


def test_median_and_spread_over_samples() -> None:
    rep = aggregate(RUNS)
    tcp = rep.figure("tcp1_ab", "aes256gcm")
    assert tcp is not None and tcp.runs == 3
    assert tcp.overlay_samples == [4.0, 3.0, 5.0] and tcp.overlay == 4.0
    assert tcp.raw_samples == [10.0, 5.0, 12.0] and tcp.raw == 10.0
    # ratio: median of each run's own overlay/raw (0.4, 0.6, 0.4167), not 4.0/10.0 of medians
    assert tcp.ratio_samples == pytest.approx([0.4, 0.6, 5 / 12])
    assert tcp.ratio == pytest.approx(5 / 12)
    assert tcp.note == "1 retransmits | 2 retransmits | 3 retransmits"
    rtt = rep.figure("rtt_idle_p50", "aes256gcm")
    assert rtt is not None and rtt.overlay == 400.0 and rtt.note == "20/20 replies"


def test_json_shape_of_a_repeated_figure() -> None:
    data = json.loads(aggregate(RUNS).to_json())
    assert data["meta"]["repeat"] == 3 and data["meta"]["started"] == "t1"
    assert data["meta"]["lab_prefixes"] == ["enl-1-", "enl-2-", "enl-3-"]
    assert data["meta"]["runs"] == [{"started": "t1"}, {"started": "t2"}, {"started": "t3"}]
    fig = next(f for f in data["figures"] if f["key"] == "tcp1_ab")
    assert fig["cipher"] == "aes256gcm" and fig["runs"] == 3 and fig["id"] == "tcp1_ab.aes256gcm"
    assert (fig["value"], fig["samples"], fig["min"], fig["max"]) == (4.0, [4.0, 3.0, 5.0],
                                                                      3.0, 5.0)
    assert fig["overlay"] == 4.0 and fig["raw"] == 10.0
    assert (fig["raw_samples"], fig["raw_min"], fig["raw_max"]) == ([10.0, 5.0, 12.0], 5.0, 12.0)
    assert fig["ratio_min"] == pytest.approx(0.4) and fig["ratio_max"] == pytest.approx(0.6)
    assert not any(k.startswith("overlay_") for k in fig)
    row = data["crypto"][0]
    assert (row["gbit_s"], row["samples"], row["min"], row["max"]) == (13.0, [12.0, 14.0, 13.0],
                                                                       12.0, 14.0)
    assert row["frames"] == 300


def test_single_run_json_carries_one_sample_each() -> None:
    fig = json.loads(RUNS[0].to_json())["figures"][0]
    assert (fig["value"], fig["samples"], fig["min"], fig["max"]) == (4.0, [4.0], 4.0, 4.0)
    assert fig["raw_samples"] == [10.0] and fig["ratio_samples"] == [0.4] and fig["runs"] == 1


def test_a_run_that_did_not_measure_is_a_missing_sample_not_a_zero() -> None:
    runs = [one_run(1, (4.0, 10.0), 300.0, 12.0), one_run(2, (None, 8.0), 300.0, 12.0)]
    fig = aggregate(runs).figure("tcp1_ab", "aes256gcm")
    assert fig is not None
    assert fig.overlay_samples == [4.0] and fig.overlay == 4.0
    assert fig.raw_samples == [10.0, 8.0] and fig.raw == 9.0
    assert fig.ratio_samples == [0.4]
    out = io.StringIO()
    render(aggregate(runs), Console(file=out, width=250))
    assert "4 (1/2)" in out.getvalue()


def test_raw_only_figure_headline_is_raw() -> None:
    runs = []
    for raw in (1.0, 3.0, 2.0):
        r = Report()
        r.figures.append(Figure("tcp1_ab", "throughput", "TCP", "Gbit/s", None, None, raw))
        runs.append(r)
    fig = json.loads(aggregate(runs).to_json())["figures"][0]
    assert (fig["value"], fig["samples"], fig["min"], fig["max"]) == (2.0, [1.0, 3.0, 2.0],
                                                                      1.0, 3.0)
    assert fig["overlay"] is None and fig["ratio"] is None and fig["ratio_samples"] == []
    assert fig["id"] == "tcp1_ab" and fig["cipher"] is None


def test_stages_and_paths_of_every_run() -> None:
    rep = aggregate(RUNS)
    assert [(s.run, s.name) for s in rep.stages][:3] == [
        (1, "lab"), (1, "flows overlay (aes256gcm)"), (2, "lab")]
    assert [s.status for s in rep.stages if s.run == 2] == ["ok", "failed"]
    assert rep.paths == {"aes256gcm": "direct-udp,relay"}


def test_table_and_html_show_the_spread() -> None:
    rep = aggregate(RUNS)
    out = io.StringIO()
    render(rep, Console(file=out, width=250))
    text = out.getvalue()
    assert "median [min-max] of 3 runs" in text
    assert "4 [3-5]" in text and "10.0 [5-12.0]" in text
    assert "0.42x [0.40x-0.60x]" in text
    assert "13.0 [12.0-14.0]" in text  # crypto Gbit/s
    page = to_html(rep)
    assert "4 [3-5]" in page and "Median [lowest-highest] of 3 runs" in page


def test_chart_bar_is_the_median_with_a_whisker_over_the_runs() -> None:
    svg = svg_throughput_chart(aggregate(RUNS))
    bars = re.findall(r'class="bar" data-series="([^"]+)" data-flow="tcp1_ab" data-value="([^"]+)"',
                      svg)
    assert bars == [("raw", "10"), ("aes256gcm", "4")]
    whiskers = dict(re.findall(
        r'class="whisker" data-series="([^"]+)" data-flow="tcp1_ab" data-samples="([^"]+)"', svg))
    assert whiskers == {"raw": "10,5,12", "aes256gcm": "4,3,5"}
    assert "whisker" not in svg_throughput_chart(RUNS[0])  # one run: no spread to draw


def test_chart_has_a_series_per_cipher() -> None:
    r = Report()
    for cipher, value in (("aes256gcm", 4.0), ("chacha20poly1305", 2.0), ("aegis256", 6.0)):
        r.figures.append(Figure("tcp1_ab", "throughput", "TCP", "Gbit/s", cipher, value, 9.0))
    svg = svg_throughput_chart(r)
    series = re.findall(r'class="bar" data-series="([^"]+)"', svg)
    assert series == ["raw", "aes256gcm", "chacha20poly1305", "aegis256"]
    assert "overlay, aegis256" in svg


def test_run_repeated_numbers_the_progress_and_runs_n_times() -> None:
    steps: list[str] = []
    calls: list[int] = []

    def once(step: object, run: int) -> Report:
        calls.append(1)
        step("lab")  # type: ignore[operator]
        return RUNS[len(calls) - 1]

    rep = run_repeated(3, once, steps.append)
    assert len(calls) == 3 and steps == ["run 1/3: lab", "run 2/3: lab", "run 3/3: lab"]
    assert rep.meta["repeat"] == 3
    steps.clear()
    calls.clear()
    assert run_repeated(1, once, steps.append) is RUNS[0] and steps == ["lab"]


@pytest.mark.parametrize("n", [0, -1, 51])
def test_repeat_bounds(n: int) -> None:
    with pytest.raises(ValueError, match="--repeat"):
        check_repeat(n)
    assert check_repeat(3) == 3


def test_nothing_to_aggregate() -> None:
    with pytest.raises(ValueError):
        aggregate([])
