"""`enclave bench --workdir DIR --repeat N`: every run works in DIR/run-<i>, so a later run does
not find the earlier run's platform ("DIR/platform already holds a platform") and every run's
files stay to be inspected; a single run keeps DIR itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

from enclave.bench.repeat import run_repeated, run_workdir
from enclave.bench.report import Report
from enclave.bench.runner import BenchContext, BenchOptions, for_run, in_workdir
from enclave.spawn import enclave_argv


def test_each_repeated_run_inits_its_own_platform_under_workdir(tmp_path: Path) -> None:
    """What start_platform does first, in every run of a --repeat 2 with --workdir: the real
    `enclave platform init` into the run's work directory; the second run must succeed."""
    opts = BenchOptions(ciphers=["aes256gcm"], workdir=tmp_path, keep_logs=True)

    def once(step: object, run: int) -> Report:
        report = Report(meta={"run": run})
        ctx = BenchContext(opts=for_run(opts, run, 2), report=report, progress=lambda _: None)

        def body() -> None:
            res = subprocess.run(
                enclave_argv("platform", "init", "--data", str(ctx.work / "platform"),
                             "--url", "https://198.18.0.10:8443", "--org", "bench"),
                capture_output=True, text=True, timeout=60)
            report.stage("platform", "ok" if res.returncode == 0 else "failed",
                         res.stderr.strip())

        in_workdir(ctx, "enclave-bench-", body)
        return report

    report = run_repeated(2, once, lambda _: None)
    assert [(s.run, s.name, s.status) for s in report.stages] == [
        (1, "platform", "ok"), (2, "platform", "ok")], report.stages
    for run in (1, 2):
        assert (tmp_path / f"run-{run}" / "platform").is_dir()
    assert not (tmp_path / "platform").exists()


def test_run_workdir() -> None:
    work = Path("/x/bench")
    assert run_workdir(work, 1, 1) == work
    assert [run_workdir(work, i, 3) for i in (1, 2, 3)] == [
        work / "run-1", work / "run-2", work / "run-3"]
    assert run_workdir(None, 2, 3) is None
    opts = BenchOptions(ciphers=["aes256gcm"], workdir=work)
    assert for_run(opts, 2, 2).workdir == work / "run-2" and opts.workdir == work
