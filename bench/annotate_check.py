"""Check that the fast path's GIL-free code has no Python interaction.

    python bench/annotate_check.py            # exit 1 and list offending lines, else 0

Cythonizes enclave/_fastpath.pyx with annotation into a temporary directory (the tree is not
touched), then looks at every line inside a `... noexcept nogil:` function or a `with nogil:`
block of the .pyx and its .pxi includes. A line Cython scores above 0 (a "yellow" line) touches
Python objects or the C-API and is reported. The `with nogil:` line itself (GIL release and
re-acquire) is expected to score and is not counted.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "enclave"
_LINE = re.compile(r'<pre class="cython line score-(\d+)"[^>]*>(.*?)</pre>', re.S)
_NUM = re.compile(r"^\+?\s*(\d+):")


def nogil_lines(source: str) -> set[int]:
    """1-based line numbers inside nogil functions / with-nogil blocks (bodies only)."""
    lines = source.splitlines()
    found: set[int] = set()
    i = 0
    while i < len(lines):
        text = lines[i]
        stripped = text.strip()
        is_block = stripped.startswith("with nogil")
        is_func = False
        if stripped.startswith(("cdef ", "cpdef ")):
            # join a signature spanning lines (until parentheses balance)
            end, depth = i, stripped.count("(") - stripped.count(")")
            while depth > 0 and end + 1 < len(lines):
                end += 1
                depth += lines[end].count("(") - lines[end].count(")")
            head = " ".join(x.strip() for x in lines[i : end + 1])
            if "nogil" in head and head.split("#")[0].rstrip().endswith(":"):
                is_func, i = True, end
        if is_func or is_block:
            indent = len(text) - len(text.lstrip())
            j = i + 1
            while j < len(lines):
                body = lines[j]
                if body.strip() and (len(body) - len(body.lstrip())) <= indent:
                    break
                if body.strip() and not body.strip().startswith("#"):
                    found.add(j + 1)
                j += 1
        i += 1
    return found


def scores(html_text: str) -> dict[int, tuple[int, str]]:
    out: dict[int, tuple[int, str]] = {}
    for m in _LINE.finditer(html_text):
        text = html.unescape(re.sub(r"<[^>]+>", "", m.group(2))).replace("\xa0", " ")
        num = _NUM.match(text.strip())
        if num:
            out[int(num.group(1))] = (int(m.group(1)), text.strip())
    return out


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="enclave-annotate-") as tmp:
        work = Path(tmp) / "enclave"
        work.mkdir()
        for pattern in ("*.pyx", "*.pxi", "*.pxd", "__init__.py"):
            for f in PKG.glob(pattern):
                shutil.copy(f, work / f.name)
        # the optimised build's directives (setup.py): no bounds/wraparound checks
        directives = "boundscheck=False,wraparound=False,cdivision=True,initializedcheck=False"
        subprocess.run(
            [sys.executable, "-m", "cython", "-3", "-a", "-X", directives, "-I", tmp,
             "enclave/_fastpath.pyx"],
            cwd=tmp, check=True, capture_output=True,
        )
        bad = 0
        checked = 0
        for src in sorted([*work.glob("*.pyx"), *work.glob("*.pxi")]):
            page = src.with_suffix(".html")
            if not page.exists():
                continue
            per_line = scores(page.read_text())
            for n in sorted(nogil_lines(src.read_text())):
                score, text = per_line.get(n, (0, ""))
                checked += 1
                if score > 0:
                    bad += 1
                    print(f"{src.name}:{n}: score {score}: {text}")
        print(f"{checked} lines in nogil code checked, {bad} with Python interaction")
        return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
