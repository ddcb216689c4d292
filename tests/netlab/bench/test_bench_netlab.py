"""`enclave bench` in a real netlab: a short raw-path run through the runner, and the whole
command end to end (overlay figures only when the overlay carried them)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from enclave.bench import runner
from enclave.bench.report import to_html
from enclave.netlab import netns
from enclave.spawn import enclave_argv
from tests.support.lab import netlab_unavailable
from tests.support.proc import REPO

pytestmark = [pytest.mark.netlab, pytest.mark.root]


@pytest.fixture(scope="module", autouse=True)
def _lab_possible() -> None:
    reason = netlab_unavailable()
    if reason is not None:
        pytest.skip(reason)


def _leftovers(prefix: str) -> list[str]:
    """Namespaces of our lab still present (other labs may run concurrently: not ours)."""
    assert prefix
    return [n for n in netns.list_netns() if n.startswith(prefix)]


def test_raw_path_run_report_json_html(tmp_path: Path) -> None:
    steps: list[str] = []
    opts = runner.BenchOptions(ciphers=["chacha20poly1305"], duration=1,
                               flows=("tcp1", "udp512", "latency"), ping_count=20,
                               crypto=True, crypto_seconds=0.01, overlay=False,
                               nat_a="symmetric", nat_b="port-restricted")
    report = runner.run(opts, progress=steps.append)
    assert not _leftovers(report.meta["lab_prefix"]), "lab not torn down"

    status = {s.name: s.status for s in report.stages}
    assert status == {"lab": "ok", "raw-path": "ok", "overlay": "skipped", "flows raw": "ok",
                      "crypto": "ok"}, report.stages
    assert steps[0] == "lab" and steps[-1] == "crypto"
    assert len(steps) <= runner.steps_for(opts)

    figs = {f.key: f for f in report.figures}
    assert set(figs) == {"tcp1_ab", "tcp1_ba", "udp512_pps", "udp512_loss", "rtt_idle_p50",
                         "rtt_idle_p99", "rtt_load_p50", "rtt_load_p99"}, report.stages
    for f in figs.values():
        assert f.overlay is None and f.ratio is None  # --no-overlay: never an overlay number
        assert f.raw is not None
    assert figs["tcp1_ab"].raw > 0.01 and figs["tcp1_ba"].raw > 0.01  # type: ignore[operator]
    assert figs["udp512_pps"].raw > 1  # type: ignore[operator]
    assert 0 <= figs["udp512_loss"].raw <= 100  # type: ignore[operator]
    assert 0 < figs["rtt_idle_p50"].raw <= figs["rtt_idle_p99"].raw  # type: ignore[operator]
    assert {r["cipher"] for r in report.crypto} == {"chacha20poly1305"}

    data = json.loads(report.to_json())
    assert data["meta"]["nat_a"] == "symmetric"
    assert {f["key"] for f in data["figures"]} == set(figs)
    page = to_html(report)
    bars = re.findall(r'data-series="raw" data-flow="(tcp1_a[b])" data-value="([^"]+)"', page)
    assert bars and float(bars[0][1]) == pytest.approx(figs["tcp1_ab"].raw, rel=1e-5)


def test_enclave_bench_command_end_to_end(tmp_path: Path) -> None:
    """The real command: lab, platform, enrol, then the overlay if the agent exists, else a clear
    'unavailable' and raw figures only."""
    out_json, out_html = tmp_path / "bench.json", tmp_path / "bench.html"
    res = subprocess.run(
        enclave_argv("bench", "--duration", "1", "--flows", "tcp1",
                     "--cipher", "aes256gcm", "--no-crypto", "--ping-count", "10",
                     "--connect-timeout", "10",
                     "--json", str(out_json), "--html", str(out_html)),
        capture_output=True, text=True, timeout=240, cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
    )
    data = json.loads(out_json.read_text())
    assert not _leftovers(data["meta"]["lab_prefix"]), "lab not torn down"
    stages = {s["name"]: s for s in data["stages"]}
    for name in ("lab", "raw-path", "platform", "enrol", "flows raw"):
        assert stages[name]["status"] == "ok", stages[name]
    assert "<svg" in out_html.read_text()
    figs = [f for f in data["figures"] if f["key"] == "tcp1_ab"]
    assert figs and all(f["raw"] and f["raw"] > 0 for f in figs)
    overlay_ok = stages.get("flows overlay (aes256gcm)", {}).get("status") == "ok"
    if overlay_ok:
        assert res.returncode == 0, res.stdout + res.stderr
        assert all(f["overlay"] and f["overlay"] > 0 and f["ratio"] for f in figs)
        assert data["paths"]["aes256gcm"] in ("lan", "direct-udp", "direct-tcp", "relay")
        setup = [f for f in data["figures"] if f["key"] == "setup_ms"]
        assert setup and setup[0]["overlay"] > 0
        startup = [f for f in data["figures"] if f["key"] == "startup_ms"]
        assert startup and startup[0]["overlay"] > 0
        # the ceiling: TapRelay between the same hosts, no AEAD and with the run's cipher
        assert stages["ceiling"]["status"] == "ok", stages["ceiling"]
        ceil = {f["key"]: f for f in data["figures"] if f["group"] == "ceiling"}
        assert set(ceil) == {"ceiling_plain", "ceiling_aead"}
        assert ceil["ceiling_plain"]["cipher"] is None
        assert ceil["ceiling_aead"]["cipher"] == "aes256gcm"
        for f in ceil.values():
            assert f["overlay"] > 0 and f["raw"] == figs[0]["raw"]
            assert f["note"].endswith(" 0 open failures")
        assert ceil["ceiling_aead"]["note"].startswith("overlay at ")
    else:
        assert res.returncode == 1
        blocked = [s for s in data["stages"] if s["status"] in ("unavailable", "failed")]
        assert blocked, data["stages"]
        assert all(f["overlay"] is None and f["ratio"] is None for f in figs)
        assert "unavailable" in res.stdout or "failed" in res.stdout
