"""CPU seconds and peak RSS of a process tree, from /proc (Linux).

    utime + stime (+ cutime + cstime of reaped children) / SC_CLK_TCK  -> CPU seconds
    VmHWM in /proc/PID/status                                           -> peak RSS (bytes)
"""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: split after the last ')'
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time used by the tree rooted at ``pid`` so far (0.0 if it is gone)."""
    total = 0
    for p in descendants(pid):
        fields = _stat_fields(p)
        if fields is None:
            continue
        # fields[0] is state (stat field 3); utime, stime, cutime, cstime are fields 14..17
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / CLK_TCK


def peak_rss_bytes(pid: int) -> int | None:
    """Largest VmHWM in the tree rooted at ``pid``; None if unreadable."""
    best: int | None = None
    for p in descendants(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("VmHWM:"):
                kb = int(line.split()[1])
                best = max(best or 0, kb * 1024)
    return best
