"""`enclave bench --threads LIST`: one overlay run per worker count, figures labelled by it."""

from __future__ import annotations

import pytest

from enclave.bench import cli, runner
from enclave.cli import build_parser


def test_threads_list_parses_and_labels() -> None:
    args = build_parser().parse_args(["bench", "--threads", "1,2"])
    assert cli._threads(args.threads) == (1, 2)
    assert cli._threads(None) == (None,)
    assert runner.run_label("aes256gcm", 2) == "aes256gcm t2"
    assert runner.run_label("aes256gcm", None) == "aes256gcm"


@pytest.mark.parametrize("bad", ["x", "1,two"])
def test_threads_list_refuses_words(bad: str) -> None:
    with pytest.raises(ValueError, match="--threads"):
        cli._threads(bad)


@pytest.mark.parametrize("threads", [(0,), (65,), ()])
def test_threads_out_of_range_is_refused(threads: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="--threads"):
        runner.BenchOptions(ciphers=["aes256gcm"], threads=threads)


def test_each_worker_count_is_an_overlay_run() -> None:
    one = runner.BenchOptions(ciphers=["aes256gcm"])
    two = runner.BenchOptions(ciphers=["aes256gcm"], threads=(1, 2))
    # up, intent, connected, overlay check and the flows: once more for the second count
    assert runner.steps_for(two) - runner.steps_for(one) == 4 + runner._flow_steps(one)
