"""The fuzz harness: what a target is, the registry, and the worker that runs one under atheris.

    run.py (runner, one subprocess per target, one at a time)
      |  python3 -m bench.fuzz.harness TARGET --runs N --seed S --report R.json --corpus DIR
      v
    worker: imports the target's module with atheris coverage instrumentation (``enclave``, and
            ``bench.fuzz`` so a target's own branches on outcomes guide the fuzzer too),
            writes the target's seeds into DIR, then libFuzzer feeds inputs to Harness.one(data)
              - an exception escaping one()        -> crash (libFuzzer keeps the input, rc != 0)
              - a case running over --timeout s     -> hang (libFuzzer's per-input alarm, rc != 0)
              - every CHECK_EVERY cases and at the end: Harness.state() sizes <= their bounds
                (else an AssertionError: a crash), resident memory sampled
            after exactly N cases: the report (cases, seconds, slowest case, RSS at the first and
            the last case, the final table sizes) is written to R.json and the worker exits 0.

    python3 -m bench.fuzz.harness TARGET --replay crash-FILE     a kept input again, no atheris
    drive(load(TARGET, seed), runs, seed)                        deterministic cases, no atheris
                                                                 (bench/test_fuzz_smoke.py)

A target is a factory (seed -> Harness) in the FACTORIES dict of a ``targets_*`` module; TARGETS
says which module.  Targets catch exactly the errors their parser documents (WireError,
TokenError, ApiError 400, ...); anything else escapes and is a crash.  They also assert the
properties the code promises (round trips, silence towards strangers, outputs within limits).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

# target name -> the module whose FACTORIES holds it (imported only in the worker, under
# instrumentation)
TARGETS: dict[str, str] = {
    "handshake": "bench.fuzz.targets_proto",
    "data_header": "bench.fuzz.targets_proto",
    "node": "bench.fuzz.targets_node",
    "tcp_framing": "bench.fuzz.targets_transport",
    "relay": "bench.fuzz.targets_transport",
    "relay_client": "bench.fuzz.targets_transport",
    "relay_tls": "bench.fuzz.targets_relay_tls",
    "ws_frames": "bench.fuzz.targets_relay_tls",
    "reflector": "bench.fuzz.targets_transport",
    "offload": "bench.fuzz.targets_offload",
    "ident": "bench.fuzz.targets_offload",
    "token": "bench.fuzz.targets_platform",
    "control_json": "bench.fuzz.targets_platform",
    "http_json": "bench.fuzz.targets_platform",
}
Factory = Callable[[int], "Harness"]
CHECK_EVERY = 10_000


class Harness(Protocol):
    """One fuzz target, set up once per worker; `one` runs a case."""

    max_len: int  # longest input libFuzzer generates

    def seeds(self) -> list[bytes]: ...

    def one(self, data: bytes) -> None: ...

    def state(self) -> dict[str, tuple[int, int]]:
        """Table name -> (current size, documented bound); empty for stateless targets."""
        ...


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class Reader:
    """Consumes fuzz bytes front to back; past the end every read gives zeros / b""."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def u8(self) -> int:
        if self.at >= len(self.data):
            return 0
        self.at += 1
        return self.data[self.at - 1]

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n).ljust(n, b"\0"), "little")

    def take(self, n: int) -> bytes:
        out = self.data[self.at : self.at + n]
        self.at += len(out)
        return out

    def rest(self) -> bytes:
        out = self.data[self.at :]
        self.at = len(self.data)
        return out

    def rest_or_edit(self, samples: list[bytes]) -> bytes:
        """The rest as it is (next byte even), or one of `samples` (picked by the byte after)
        with edits: raw bytes and structure-aware mutation from one input."""
        if self.u8() % 2 == 0:
            return self.rest()
        return self.edits(samples[self.u8() % len(samples)])

    def edits(self, base: bytes, max_edits: int = 8) -> bytes:
        """`base` with up to `max_edits` bytes overwritten and a cut off its end (fuzz-chosen):
        structure-aware mutation of a valid message."""
        out = bytearray(base)
        for _ in range(self.u8() % (max_edits + 1)):
            if out:
                out[self.uint(2) % len(out)] = self.u8()
        cut = self.u8()
        if cut >= 192 and out:
            del out[len(out) - (cut - 191) % len(out) :]
        return bytes(out)


def check_bounds(h: Harness) -> dict[str, int]:
    sizes = {}
    for name, (size, bound) in h.state().items():
        assert size <= bound, f"state growth: {name} holds {size} entries, bound {bound}"
        sizes[name] = size
    return sizes


def load(name: str, seed: int) -> Harness:
    """The target `name`, set up (imports its module: instrumented when called under atheris)."""
    mod = importlib.import_module(TARGETS[name])
    factories: dict[str, Factory] = mod.FACTORIES
    return factories[name](seed)


def drive(h: Harness, runs: int, seed: int) -> None:
    """Without atheris: the seeds, then `runs` deterministic cases (random bytes, and seeds
    with bytes changed, inserted or cut), table bounds checked at the end. The smoke test's
    driver: proves in a second that a target runs; coverage guidance is the worker's job."""
    rng = random.Random(seed)
    seeds = h.seeds() or [b""]
    for s in seeds:
        h.one(s)
    for i in range(runs):
        if i % 4 == 0:
            data = rng.randbytes(rng.randrange(min(h.max_len, 512)))
        else:
            buf = bytearray(seeds[rng.randrange(len(seeds))])
            for _ in range(rng.randrange(1, 6)):
                op = rng.randrange(3)
                at = rng.randrange(len(buf) + 1)
                if op == 0 and at < len(buf):
                    buf[at] = rng.randrange(256)
                elif op == 1:
                    buf[at:at] = rng.randbytes(rng.randrange(1, 8))
                else:
                    del buf[at:]
            data = bytes(buf[: h.max_len])
        h.one(data)
    check_bounds(h)


def work(name: str, runs: int, seed: int, timeout: int, report: Path, corpus: Path) -> None:
    import atheris  # the worker only: the runner and the smoke test need no atheris import

    with atheris.instrument_imports(include=["enclave", "bench.fuzz"]):
        h = load(name, seed)
    corpus.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(h.seeds()):
        (corpus / f"seed-{i:03d}").write_bytes(s)
    stats = {"cases": 0, "slowest": 0.0, "t0": 0.0, "rss_start": 0, "setup_rss": rss_bytes()}

    def one(data: bytes) -> None:
        t = time.perf_counter()
        if stats["cases"] == 0:
            stats["t0"] = t
        h.one(data)
        stats["slowest"] = max(stats["slowest"], time.perf_counter() - t)
        stats["cases"] += 1
        n = stats["cases"]
        if n == 1:
            stats["rss_start"] = rss_bytes()
        if n % CHECK_EVERY == 0 or n == runs:
            sizes = check_bounds(h)
            if n == runs:
                out = {
                    "target": name, "cases": n, "seed": seed,
                    "seconds": time.perf_counter() - stats["t0"],
                    "slowest_case_ms": stats["slowest"] * 1000,
                    "rss_setup": stats["setup_rss"], "rss_start": stats["rss_start"],
                    "rss_end": rss_bytes(), "state": {k: [v, h.state()[k][1]]
                                                      for k, v in sizes.items()},
                }
                report.write_text(json.dumps(out))
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)  # libFuzzer would go on: the case count is ours

    args = [sys.argv[0], f"-runs={runs * 4 + 1000}", f"-seed={seed}", f"-timeout={timeout}",
            f"-max_len={h.max_len}", f"-artifact_prefix={corpus.parent}/",
            "-rss_limit_mb=4096", "-print_final_stats=0", str(corpus)]
    atheris.Setup(args, one)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fuzz worker (started by bench/fuzz/run.py)")
    ap.add_argument("target", choices=sorted(TARGETS))
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=10)
    ap.add_argument("--report", type=Path)
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--replay", type=Path, nargs="+", metavar="INPUT",
                    help="run these inputs (e.g. a crash-* file) once each, without atheris, "
                    "and show any exception")
    a = ap.parse_args(argv)
    if a.replay:
        h = load(a.target, a.seed)
        for path in a.replay:
            h.one(path.read_bytes())
            print(f"{path}: no crash")
        return
    if a.report is None or a.corpus is None:
        ap.error("--report and --corpus are required (or --replay)")
    work(a.target, a.runs, a.seed, a.timeout, a.report, a.corpus)


if __name__ == "__main__":
    main()
