"""Lab bookkeeping under /run/enclave-netlab/ and removal of labs left behind by dead runs.

Every lab has a run id (6 hex digits); all its namespaces are named ``enl-<runid>-<role>``.
Before creating anything a lab writes ``/run/enclave-netlab/<key>.json`` (key: the run id, or the
lab's name for a persistent ``enclave lab up`` lab) holding its owner's PID and process start
time, its namespaces and its hosts. The file goes away after the namespaces.

At the next start (under an flock on ``.lock``) :func:`reap_leftovers` removes

* non-persistent labs whose owner process is gone (PID dead, or reused: start time differs);
* ``enl-*`` namespaces no state file claims (a crash between teardown steps).

Labs of live runs and persistent labs are left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from enclave.netlab import netns

STATE_DIR = Path("/run/enclave-netlab")
NETNS_PREFIX = "enl-"
_NS_RE = re.compile(r"^enl-([0-9a-f]{6})-")
_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")

log = logging.getLogger(__name__)


def new_run_id() -> str:
    return secrets.token_hex(3)


def prefix_for(run_id: str) -> str:
    return f"{NETNS_PREFIX}{run_id}-"


def valid_key(key: str) -> bool:
    return bool(_KEY_RE.match(key))


def process_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of ``pid``, or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])  # field 22 overall


def owner_alive(pid: int, start_time: int | None) -> bool:
    current = process_start_time(pid)
    return current is not None and (start_time is None or current == start_time)


@contextlib.contextmanager
def locked(state_dir: Path = STATE_DIR) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def state_path(key: str, state_dir: Path = STATE_DIR) -> Path:
    if not valid_key(key):
        raise ValueError(f"invalid lab name {key!r} (use [a-z0-9_-], at most 32 chars)")
    return state_dir / f"{key}.json"


def write_state(path: Path, data: dict[str, Any]) -> None:
    """Atomically replace ``path`` with ``data`` as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_state(path: Path) -> dict[str, Any] | None:
    """The state in ``path``, or None when it is missing or unreadable (corrupt files included)."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
        return None
    return data


def all_states(state_dir: Path = STATE_DIR) -> dict[Path, dict[str, Any] | None]:
    if not state_dir.is_dir():
        return {}
    return {p: read_state(p) for p in sorted(state_dir.glob("*.json"))}


def destroy_namespaces(names: list[str]) -> None:
    """Delete namespaces, routers last (hosts' processes die before their uplinks vanish)."""
    errors: list[str] = []
    for name in names:
        try:
            netns.delete_netns(name)
        except netns.NetlabError as exc:
            errors.append(str(exc))
    if errors:
        raise netns.NetlabError("; ".join(errors))


def run_files(prefix: str, state_dir: Path = STATE_DIR) -> Path:
    """The directory for files a lab's processes need (configs, PID files, logs: netlab.upnp),
    named by the lab's prefix; made on first use, removed with the lab or by the reaper."""
    path = state_dir / prefix.rstrip("-")
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_run_files(prefix: str, state_dir: Path = STATE_DIR) -> None:
    shutil.rmtree(state_dir / prefix.rstrip("-"), ignore_errors=True)


def reap_leftovers(state_dir: Path = STATE_DIR) -> list[str]:
    """Remove labs of dead owners and unclaimed ``enl-*`` namespaces. Caller holds the lock.

    Returns the namespaces removed.
    """
    removed: list[str] = []
    claimed: set[str] = set()
    for path, data in all_states(state_dir).items():
        if data is None:
            log.warning("netlab: removing unreadable state file %s", path)
            path.unlink(missing_ok=True)
            continue
        pid = data.get("pid")
        start = data.get("pid_start")
        alive = isinstance(pid, int) and owner_alive(pid, start if isinstance(start, int) else None)
        if data.get("persistent") or alive:
            claimed.add(str(data["run_id"]))
            continue
        names = [n for n in data.get("namespaces", []) if isinstance(n, str)]
        log.info("netlab: removing leftover lab %s (owner pid %s gone)", data["run_id"], pid)
        ours = [n for n in names if n.startswith(prefix_for(str(data["run_id"])))]
        destroy_namespaces(ours)
        removed += [n for n in ours]
        path.unlink(missing_ok=True)
    for name in netns.list_netns():
        m = _NS_RE.match(name)
        if m and m.group(1) not in claimed:
            log.info("netlab: removing unclaimed namespace %s", name)
            netns.delete_netns(name)
            removed.append(name)
    for files in state_dir.glob(f"{NETNS_PREFIX}*"):  # run_files of labs no longer claimed
        m = _NS_RE.match(files.name + "-")
        if m and m.group(1) not in claimed and files.is_dir():
            shutil.rmtree(files, ignore_errors=True)
    return removed
