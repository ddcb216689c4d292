"""Run the fuzz targets (bench/fuzz/harness.py) one at a time, each in its own worker process.

    python3 bench/fuzz/run.py all --runs 1000000            every target, a million cases each
    python3 bench/fuzz/run.py node relay --runs 50000        some targets
    python3 bench/fuzz/run.py all --runs 2000 --json out.json

Per target it prints cases, wall seconds, cases/s, the slowest case, resident memory at the
first and the last case, the stateful tables against their bounds, and the verdict:
    ok      all cases ran, no exception, every table within its bound
    crash   an exception escaped the parser or a property/bound assertion failed (the input is
            kept as crash-* in the target's work directory; the traceback is printed)
    hang    one case ran longer than --timeout seconds (libFuzzer's per-input alarm)
The exit status is 0 only when every target is ok.  Workers run under ``nice -n 10`` unless
--no-nice; inputs libFuzzer finds go to --workdir/TARGET/corpus (fresh for each run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: `bench.fuzz` and `tests.support` import
    sys.path.insert(0, str(ROOT))

from bench.fuzz.harness import TARGETS  # noqa: E402  (after the path set-up above)


@dataclass
class Result:
    target: str
    verdict: str  # ok | crash | hang
    wall: float
    report: dict[str, object] = field(default_factory=dict)
    detail: str = ""

    def line(self) -> str:
        r = self.report
        if self.verdict != "ok" or not r:
            return f"{self.target:<13} {self.verdict.upper():<6} after {self.wall:.1f} s"
        cases = int(str(r["cases"]))
        secs = float(str(r["seconds"]))
        state = r.get("state") or {}
        assert isinstance(state, dict)
        tables = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in state.items())
        return (f"{self.target:<13} ok     {cases:>9,} cases {secs:8.1f} s {cases / secs:9,.0f}/s"
                f"  slowest {float(str(r['slowest_case_ms'])):6.1f} ms"
                f"  rss {int(str(r['rss_start'])) >> 20}->{int(str(r['rss_end'])) >> 20} MiB"
                + (f"  [{tables}]" if tables else ""))


def run_one(target: str, runs: int, seed: int, timeout: int, workdir: Path, nice: bool) -> Result:
    work = workdir / target
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    report = work / "report.json"
    cmd = [sys.executable, "-m", "bench.fuzz.harness", target, "--runs", str(runs),
           "--seed", str(seed), "--timeout", str(timeout), "--report", str(report),
           "--corpus", str(work / "corpus")]
    if nice:
        cmd = ["nice", "-n", "10", *cmd]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.monotonic()
    with open(work / "worker.log", "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                              check=False)
    wall = time.monotonic() - t0
    text = (work / "worker.log").read_text(errors="replace")
    if proc.returncode == 0 and report.exists():
        return Result(target, "ok", wall, json.loads(report.read_text()))
    verdict = "hang" if "libFuzzer: timeout" in text else "crash"  # out-of-memory: a crash
    tail = [ln for ln in text.splitlines() if not ln.startswith("#")][-40:]
    return Result(target, verdict, wall, detail="\n".join(tail))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="+", help=f"'all' or some of: {', '.join(TARGETS)}")
    ap.add_argument("--runs", type=int, default=1_000_000, help="cases per target")
    ap.add_argument("--seed", type=int, default=1, help="libFuzzer seed (deterministic runs)")
    ap.add_argument("--timeout", type=int, default=10, help="seconds one case may take")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="corpus, crash inputs, logs (default: a temporary directory)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--no-nice", action="store_true", help="run workers at normal priority")
    a = ap.parse_args(argv)
    names = list(TARGETS) if a.targets == ["all"] else a.targets
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        ap.error(f"unknown target(s): {', '.join(unknown)}")
    with tempfile.TemporaryDirectory(prefix="enclave-fuzz-") as tmp:
        workdir = a.workdir or Path(tmp)
        results = []
        for name in names:
            res = run_one(name, a.runs, a.seed, a.timeout, workdir, not a.no_nice)
            results.append(res)
            print(res.line(), flush=True)
            if res.detail:
                print(res.detail, flush=True)
    if a.json is not None:
        a.json.write_text(json.dumps([{"target": r.target, "verdict": r.verdict,
                                       "wall": r.wall, **r.report} for r in results], indent=1))
    return 0 if all(r.verdict == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
