"""`enclave bench platform`, small: real `enclave platform serve` nodes on loopback, simulated
agents with real keys, enrolment, control channels and mutual intents; the report's figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres import PostgresCluster
from tests.support.proc import ENV, REPO

KEYS = ("enrol_per_s", "connect_per_s", "agents_connected", "intro_p50_ms", "intro_p99_ms",
        "cpu_s_per_1k", "rss_mb_per_1k", "rss_mb_total", "reconnect_s")


def _bench(tmp: Path, *args: str) -> dict[str, Any]:
    out = tmp / "report.json"
    res = subprocess.run([sys.executable, "-m", "enclave", "bench", "platform", *args,
                          "--json", str(out), "--timeout", "120"],
                         env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600,
                         check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return dict(json.loads(out.read_text()))


def test_two_nodes_on_postgresql(tmp_path: Path, postgres_cluster: PostgresCluster) -> None:
    report = _bench(tmp_path, "--agents", "20", "--nodes", "2",
                    "--db", postgres_cluster.create_database())
    stages = {s["name"]: s["status"] for s in report["stages"]}
    assert stages == {"platform": "ok", "enrol": "ok", "connect": "ok", "introduce": "ok",
                      "failover": "ok"}
    figures = {f["key"]: f["value"] for f in report["figures"]}
    assert set(KEYS) <= set(figures)
    assert figures["agents_connected"] == 20
    assert all(figures[k] is not None and figures[k] > 0 for k in KEYS if k != "rss_mb_per_1k")
    assert figures["intro_p50_ms"] <= figures["intro_p99_ms"]
    # every agent of the killed node tried at least once (the attempts are counted)
    assert figures["reconnect_attempts"] is not None and figures["reconnect_attempts"] >= 1
    # and their pairs were introduced again (after their welcome: later or at the same time)
    assert figures["reintroduce_s"] is not None
    assert figures["reintroduce_s"] >= figures["reconnect_s"]
    assert report["meta"]["store"] == "postgresql"


def test_one_node_on_sqlite(tmp_path: Path) -> None:
    report = _bench(tmp_path, "--agents", "4", "--nodes", "1")
    stages = {s["name"]: s["status"] for s in report["stages"]}
    assert stages["introduce"] == "ok" and stages["failover"] == "skipped"
    figures = {f["key"]: f["value"] for f in report["figures"]}
    assert figures["agents_connected"] == 4 and figures["intro_p99_ms"] is not None
    # the load generator's own CPU and memory, apart from the platform's
    assert figures["load_cpu_s_per_1k"] > 0 and figures["load_rss_mb"] > 0
    assert report["meta"]["store"] == "sqlite"


@pytest.mark.parametrize("case, args, message", [
    (1, ("--agents", "3"), "even number"),
    (2, ("--agents", "4", "--nodes", "2", "--store", "sqlite"), "PostgreSQL"),
    (3, ("--agents", "4", "--nodes", "0"), "between 1 and 8"),
])
def test_bad_options_are_clear_errors(case: int, args: tuple[str, ...], message: str) -> None:
    res = subprocess.run([sys.executable, "-m", "enclave", "bench", "platform", *args],
                         env=ENV, cwd=REPO, capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode != 0 and message in res.stderr + res.stdout
