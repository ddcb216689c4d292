"""Every fuzz target (bench/fuzz) runs: 2,000 deterministic cases each in this process, and one
target through the real runner and atheris worker (bench/fuzz/run.py), so the million-case runs
documented in docs/SECURITY.md stay runnable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.fuzz.harness import TARGETS, drive, load

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_runs_2000_cases_without_crash_or_growth(name: str) -> None:
    h = load(name, seed=1)
    drive(h, 2000, seed=1)  # raises on a crash, a broken property or a table over its bound


def test_runner_runs_a_target_under_atheris(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/fuzz/run.py"), "relay", "--runs", "2000",
         "--workdir", str(tmp_path), "--json", str(out), "--no-nice"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [res] = json.loads(out.read_text())
    assert (res["target"], res["verdict"], res["cases"]) == ("relay", "ok", 2000)
    assert res["state"]["registrations"][0] <= res["state"]["registrations"][1]
