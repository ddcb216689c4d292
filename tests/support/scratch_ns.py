"""A throwaway network namespace for tests of one device (a TAP) that need no lab.

Named ``enl-<what>-<pid>-<8 hex>`` after the test process: each new one first deletes the
scratch namespaces of processes that no longer run (a run killed before its ``finally``), so an
aborted run's leftovers are gone at the next start, while another live run's are left alone.
(Labs clean their own ``enl-<run id>-*`` namespaces: enclave/netlab/state.py.)"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

_SCRATCH = re.compile(r"^enl-[a-z0-9]+-(\d+)-[0-9a-f]{8}$")


def ns_exec(ns: str, *argv: str) -> str:
    """Run argv inside namespace ``ns``; its standard output."""
    return subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True,
                          text=True, timeout=10).stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_scratch() -> list[str]:
    """Delete the scratch namespaces of processes that have gone; their names."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=10).stdout.split("\n")
    gone = []
    for line in listed:
        name = line.split(" ", 1)[0]
        m = _SCRATCH.match(name)
        if m and not _alive(int(m.group(1))):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
            gone.append(name)
    return gone


@contextmanager
def scratch_ns(what: str, *sysctls: str) -> Iterator[str]:
    """A new namespace (skipped without root) with ``sysctls`` (``key=value``) set in it,
    deleted at the end."""
    if os.geteuid() != 0:
        pytest.skip("TAP tests need root")
    reap_scratch()
    name = f"enl-{what}-{os.getpid()}-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    try:
        if sysctls:
            ns_exec(name, "sysctl", "-qw", *sysctls)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
