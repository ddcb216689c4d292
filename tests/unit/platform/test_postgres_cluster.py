"""The throwaway PostgreSQL cluster of the test suite (tests.support.postgres): a run killed
without its teardown leaves a cluster running, and the next start stops it and removes it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.postgres import PostgresCluster, remove_leftovers
from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[3]
STARTER = ("import sys, time\n"
           "from tests.support.postgres import PostgresCluster\n"
           "c = PostgresCluster.start()\n"
           "print(c.root, flush=True)\n"
           "time.sleep(120)\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_killed_runs_cluster_is_stopped_and_removed(
        postgres_cluster: PostgresCluster) -> None:  # FAILS where PostgreSQL is missing
    proc = subprocess.Popen([sys.executable, "-c", STARTER], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        root = Path(proc.stdout.readline().strip())
        assert root.name == f"enclave-pg-{proc.pid}" and root.is_dir()
        postmaster = int((root / "data" / "postmaster.pid").read_text().splitlines()[0])
        assert _alive(postmaster)
    finally:
        proc.kill()  # no teardown, no atexit: the cluster is left behind
        proc.wait()
    assert root.is_dir() and _alive(postmaster)
    assert root in remove_leftovers()
    assert not root.exists()
    wait_for(lambda: not _alive(postmaster), 20, what="the left-over postmaster to stop")
    assert postgres_cluster.root.is_dir()  # this session's own cluster is left alone


def test_a_forked_child_never_stops_its_parents_cluster(
        postgres_cluster: PostgresCluster) -> None:
    """atexit hooks are inherited across fork (pyroute2's netns helpers fork): the child's
    exit must leave the session's cluster running."""
    pid = os.fork()
    if pid == 0:  # the child runs what its inherited atexit hook would run, then leaves
        try:
            postgres_cluster.stop()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert (postgres_cluster.root / "data" / "postmaster.pid").exists()
    url = postgres_cluster.create_database()  # the server still answers
    assert url.startswith("postgresql://")
