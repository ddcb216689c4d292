"""tests/support/scratch_ns: the scratch namespace of a test process that was killed is deleted
by the next one made; a live process's is kept."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.scratch_ns import reap_scratch, scratch_ns

pytestmark = [pytest.mark.netlab, pytest.mark.root]


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         timeout=10).stdout
    return {line.split(" ", 1)[0] for line in out.splitlines() if line.strip()}


def test_a_dead_runs_scratch_namespace_is_reaped_a_live_ones_kept() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs (reaped)
    leftover = f"enl-tap-{dead.pid}-0123abcd"
    mine = f"enl-tap-{os.getpid()}-4567cdef"
    for name in (leftover, mine):
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    try:
        with scratch_ns("tap") as fresh:
            assert fresh in _namespaces()
            assert leftover not in _namespaces()  # the killed run's: gone at this start
            assert mine in _namespaces()  # a live run's: kept
        assert fresh not in _namespaces()
        assert reap_scratch() == []
    finally:
        for name in (leftover, mine):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
