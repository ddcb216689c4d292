"""Report rendering (unit): ratios, JSON schema, rich table, self-contained HTML/SVG."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from enclave.bench.report import Figure, Report, Stage, render, svg_throughput_chart, to_html
from enclave.bench.runner import BenchOptions, parse_peers


def sample() -> Report:
    r = Report(meta={"version": "x", "duration_s": 1})
    r.stage("lab", "ok", "built", 0.5)
    r.stage("agent", "unavailable", "overlay: agent data plane not available yet")
    r.figures += [
        Figure("tcp1_ab", "throughput", "TCP 1 stream a1->b1", "Gbit/s", "aes256gcm", 4.0, 8.0),
        Figure("tcp1_ab", "throughput", "TCP 1 stream a1->b1", "Gbit/s", "chacha20poly1305",
               None, 8.0),
        Figure("rtt_idle_p50", "latency", "RTT p50 idle", "us", "aes256gcm", 300.0, 150.0,
               higher_is_better=False),
        Figure("udp64_pps", "udp", "UDP 64 B <script>", "kpps", None, None, 0.0),
    ]
    r.crypto = [{"cipher": "aes256gcm", "op": "seal", "size": 64, "impl": "fastpath-batch",
                 "frames": 10, "seconds": 1.0, "gbit_s": 3.0, "ns_per_frame": 150.0}]
    return r


def test_ratio_only_when_both_measured() -> None:
    r = sample()
    assert r.figures[0].ratio == pytest.approx(0.5)
    assert r.figures[1].ratio is None  # overlay not measured: no invented number
    assert r.figures[2].ratio == pytest.approx(2.0)
    assert r.figures[3].ratio is None  # raw 0 and overlay missing


def test_json_has_overlay_raw_ratio_units() -> None:
    data = json.loads(sample().to_json())
    assert data["schema"] == "enclave-bench/1"
    fig = data["figures"][0]
    assert {"overlay", "raw", "ratio", "unit", "cipher", "key", "label"} <= set(fig)
    assert (fig["overlay"], fig["raw"], fig["ratio"], fig["unit"]) == (4.0, 8.0, 0.5, "Gbit/s")
    assert data["figures"][1]["overlay"] is None and data["figures"][1]["ratio"] is None
    assert [s["status"] for s in data["stages"]] == ["ok", "unavailable"]
    assert data["crypto"][0]["gbit_s"] == 3.0


def test_stage_status_is_checked() -> None:
    with pytest.raises(ValueError, match="status"):
        Stage("x", "great")


def test_html_is_self_contained_and_escaped() -> None:
    page = to_html(sample())
    assert "<svg" in page and "</html>" in page
    assert "<script" not in page.replace("&lt;script&gt;", "")  # label escaped, no scripts
    assert not re.search(r"(src|href)=", page)  # nothing fetched
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_svg_bars_carry_measured_values_only() -> None:
    svg = svg_throughput_chart(sample())
    bars = re.findall(r'data-series="([^"]+)" data-flow="([^"]+)" data-value="([^"]+)"', svg)
    assert ("raw", "tcp1_ab", "8") in bars
    assert ("aes256gcm", "tcp1_ab", "4") in bars
    assert not any(s == "chacha20poly1305" for s, _, _ in bars)
    assert "chacha20poly1305: not measured" in svg


def test_rich_table_lists_every_figure() -> None:
    out = io.StringIO()
    render(sample(), Console(file=out, width=200))
    text = out.getvalue()
    assert "TCP 1 stream a1->b1" in text and "0.50x" in text and "unavailable" in text
    assert "fastpath-batch" in text


def test_rich_table_is_not_wrapped_when_piped(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal (a log, a pipe) and no COLUMNS: each figure stays on one row."""
    monkeypatch.delenv("COLUMNS", raising=False)
    render(sample())
    rows = [ln for ln in capsys.readouterr().out.splitlines() if "TCP 1 stream a1->b1" in ln]
    assert rows and any("0.50x" in ln for ln in rows)


def test_options_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown flows"):
        BenchOptions(ciphers=["aes256gcm"], flows=("tcp1", "bogus"))
    with pytest.raises(ValueError, match="duration"):
        BenchOptions(ciphers=["aes256gcm"], duration=0)


def test_parse_peers_shapes() -> None:
    peer = {"name": "B", "state": "connected", "path": "direct-udp"}
    assert parse_peers(json.dumps([peer])) == [peer]
    assert parse_peers(json.dumps({"peers": [peer, "junk"]})) == [peer]
    with pytest.raises(ValueError):
        parse_peers(json.dumps({"peers": 3}))
    with pytest.raises(ValueError):
        parse_peers("not json")


def test_setup_time_sources() -> None:
    from enclave.bench.runner import setup_time_ms

    ms, note = setup_time_ms({"connected_at": 1000.25, "setup_ms": 90}, 1000.0, 0.5)
    assert ms == pytest.approx(250.0) and "connected_at" in note
    ms, note = setup_time_ms({"connected_at": 999.0, "setup_ms": 90}, 1000.0, 0.5)  # clock skew
    assert ms == 90.0 and "setup_ms" in note
    ms, note = setup_time_ms({"connected_at": None, "setup_ms": None}, 1000.0, 0.5)
    assert ms == 500.0 and "polled" in note


def test_command_console_is_wide_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """`enclave bench > log`: the report is not wrapped at 80 columns."""
    from enclave.bench.command import console
    from enclave.bench.report import NON_TTY_WIDTH

    monkeypatch.delenv("COLUMNS", raising=False)
    out = console()
    assert not out.is_terminal and out.width == NON_TTY_WIDTH


def test_session_cipher_spelled_as_the_option() -> None:
    from enclave.bench.runner import session_cipher

    assert session_cipher({"cipher": "aes256_gcm"}) == "aes256gcm"
    assert session_cipher({"cipher": "chacha20_poly1305"}) == "chacha20poly1305"
    assert session_cipher({"cipher": "aegis256"}) == "aegis256"
    assert session_cipher({"cipher": None}) is None and session_cipher({}) is None
