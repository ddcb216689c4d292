"""`enclave bench gateway` end to end, short: the real command builds its lab, platform, gateway
policy and agents, measures TCP throughput and latency through the gateway and over the raw
path, writes JSON and HTML, and leaves nothing behind."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from enclave.bench.gateway import gateway_route
from enclave.netlab import netns
from enclave.spawn import enclave_argv
from tests.support.lab import netlab_unavailable
from tests.support.proc import REPO

pytestmark = [pytest.mark.netlab, pytest.mark.root, pytest.mark.timeout(240)]


def test_gateway_route_parsing() -> None:
    lan = "198.19.2.0/24"
    ok = {"gateway": {"routes": {lan: {"via": "100.64.0.9", "gateway": "K53WV"}}}}
    assert gateway_route(ok, lan) == {"via": "100.64.0.9", "gateway": "K53WV"}
    # not yet chosen, other subnet, no gateway state, junk: no route
    for st in ({"gateway": {"routes": {lan: {"via": "100.64.0.9", "gateway": None}}}},
               {"gateway": {"routes": {"10.0.0.0/8": {"gateway": "X"}}}},
               {"gateway": None}, {}, None, {"gateway": {"routes": []}},
               {"gateway": {"routes": {lan: "x"}}}):
        assert gateway_route(st, lan) is None, st  # type: ignore[arg-type]


def test_enclave_bench_gateway_command(tmp_path: Path) -> None:
    reason = netlab_unavailable()
    if reason is not None:
        pytest.skip(reason)
    out_json, out_html = tmp_path / "gw.json", tmp_path / "gw.html"
    res = subprocess.run(
        enclave_argv("bench", "gateway", "--duration", "1",
                     "--flows", "tcp1,latency", "--ping-count", "20", "--connect-timeout", "20",
                     "--json", str(out_json), "--html", str(out_html)),
        capture_output=True, text=True, timeout=220, cwd=REPO,
        env={**os.environ, "COLUMNS": "200"})
    assert out_json.exists(), res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(out_json.read_text())
    prefix = report["meta"]["lab_prefix"]
    assert prefix and not [n for n in netns.list_netns() if n.startswith(prefix)], \
        "lab not torn down"
    status = {s["name"]: s["status"] for s in report["stages"]}
    assert status == {"lab": "ok", "raw-path": "ok", "platform": "ok", "enrol": "ok",
                      "up (aes256gcm)": "ok", "gateway (aes256gcm)": "ok",
                      "flows gateway (aes256gcm)": "ok", "flows raw": "ok"}, report["stages"]
    assert res.returncode == 0, res.stderr[-2000:]
    assert report["meta"]["mode"] == "gateway" and report["meta"]["lan"] == "198.19.2.0/24"
    assert report["paths"] == {"aes256gcm": "direct-udp"}
    stages = {s["name"]: s for s in report["stages"]}
    routed = re.search(r"gateway filter: (\d+) frames routed",
                       stages["flows gateway (aes256gcm)"]["detail"])
    assert routed and int(routed.group(1)) > 1000  # the figures went through the gateway

    figs = {f["key"]: f for f in report["figures"]}
    for key in ("tcp1_ab", "tcp1_ba", "rtt_idle_p50", "rtt_idle_p99", "rtt_load_p50"):
        f = figs[key]
        assert f["cipher"] == "aes256gcm" and f["overlay"] > 0 and f["raw"] > 0, f
        assert f["ratio"] == pytest.approx(f["overlay"] / f["raw"])
    assert figs["tcp1_ab"]["label"] == "TCP 1 stream a1->b2"
    assert figs["rtt_idle_p50"]["overlay"] <= figs["rtt_idle_p99"]["overlay"]
    assert figs["gateway_ready_ms"]["overlay"] > 0 and figs["gateway_ready_ms"]["raw"] is None
    assert figs["cpu_per_gb_b1"]["overlay"] > 0  # the gateway agent's CPU per GB moved
    page = out_html.read_text()
    assert html.escape("TCP 1 stream a1->b2") in page
    bars = re.findall(r'data-series="raw" data-flow="tcp1_ab" data-value="([^"]+)"', page)
    assert bars and float(bars[0]) == pytest.approx(figs["tcp1_ab"]["raw"], rel=1e-5)
    assert "flows gateway (aes256gcm)" in res.stdout  # the rich table
