"""The shape of the code: no import cycle, no source file over 1,000 lines, and the boundaries
between the rooms (docs/ARCHITECTURE.md).

Read from the source with `ast` (tests/support/imports.py): nothing is imported or run. An import
counts wherever it stands, inside a function or under `if TYPE_CHECKING:` too, and so does a
module named by string to `importlib.import_module`. The checkers are
tried first on small synthetic packages, so a rule that could never fail would show here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.imports import (
    cycle_edges,
    cycles,
    forbidden_imports,
    import_graph,
    long_files,
    package_graph,
)

ROOT = Path(__file__).resolve().parents[3]
ENCLAVE = ROOT / "enclave"
MAX_LINES = 1000
IO_MODULES = {"asyncio", "socket", "time", "pyroute2"}
PROTOCOL_CORES = ("enclave.proto", "enclave.discovery", "enclave.policy")


# -- the project ---------------------------------------------------------------------------------


def test_enclave_has_no_import_cycle() -> None:
    found = cycles(import_graph(ENCLAVE))
    detail = "\n".join(
        f"cycle {' <-> '.join(c)}:\n    " + "\n    ".join(cycle_edges(ENCLAVE, c)) for c in found
    )
    assert not found, f"import cycles (move the shared piece below its users):\n{detail}"


def test_rooms_import_one_way() -> None:
    """The package-level graph (enclave.agent, enclave.platform, ...) has no cycle either."""
    assert cycles(package_graph(import_graph(ENCLAVE))) == []


def test_no_source_file_over_1000_lines() -> None:
    roots = [ENCLAVE, ROOT / "tests", ROOT / "bench"]
    found = [(str(p.relative_to(ROOT)), n) for p, n in long_files(roots, MAX_LINES)]
    assert found == [], f"split these (more than {MAX_LINES} lines): {found}"


@pytest.mark.parametrize("package", PROTOCOL_CORES)
def test_protocol_cores_import_no_io(package: str) -> None:
    """Sans-I/O: the protocol cores take bytes and the time, and return bytes, events and
    deadlines; sockets, clocks, event loops and netlink live in the agent and the platform."""
    assert forbidden_imports(ENCLAVE, package, IO_MODULES) == []


def test_platform_and_agent_never_import_each_other() -> None:
    assert forbidden_imports(ENCLAVE, "enclave.platform", {"enclave.agent"}) == []
    assert forbidden_imports(ENCLAVE, "enclave.agent", {"enclave.platform"}) == []


# -- the checkers, on synthetic packages -----------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "a.py": "from pkg.b import helper\n",
        "b.py": "def helper():\n    from pkg.a import thing\n    return thing\n",
        "c.py": "import pkg.a\n",  # uses the cycle, is not part of it
    })
    assert cycles(import_graph(root)) == [["pkg.a", "pkg.b"]]
    assert cycle_edges(root, ["pkg.a", "pkg.b"]) == [
        "pkg.a:1 -> pkg.b",
        "pkg.b:2 -> pkg.a (inside a function)",
    ]


def test_checker_follows_relative_submodule_and_type_checking_imports(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "sub/__init__.py": "",
        "sub/x.py": "from . import y\n",  # y is a submodule: the edge is to pkg.sub.y
        "sub/y.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                    "    from ..z import Z\n",
        "z.py": "from pkg.sub import x\n",
    })
    graph = import_graph(root)
    assert graph["pkg.sub.x"] == {"pkg.sub.y"}
    assert graph["pkg.sub.y"] == {"pkg.z"}
    assert cycles(graph) == [["pkg.sub.x", "pkg.sub.y", "pkg.z"]]
    assert cycles(package_graph(graph)) == [["pkg.sub", "pkg.z"]]


def test_checker_follows_imports_by_name(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "app.py": "import importlib\nimport logging\nlog = logging.getLogger('pkg.routes')\n"
                  "ROUTES = ('pkg.routes',)\n"
                  "def build():\n    for n in ROUTES:\n        importlib.import_module(n)\n",
        "routes.py": "from pkg.app import log\n",
        "other.py": "NAMES = ('pkg.routes',)\n",  # no import_module here: just data
    })
    graph = import_graph(root)
    assert graph["pkg.app"] == {"pkg.routes"}
    assert graph["pkg.other"] == set()
    assert cycles(graph) == [["pkg.app", "pkg.routes"]]


def test_checker_passes_a_one_way_package(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "low.py": "X = 1\n",
        "mid.py": "from pkg.low import X\n",
        "top.py": "import pkg.mid\ndef f():\n    from pkg import low\n    return low\n",
    })
    assert cycles(import_graph(root)) == []


def test_checker_reads_cython_includes(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "_ext.pyx": 'cimport cython\ninclude "_ext_part.pxi"\n',
        "_ext_part.pxi": "import os as _os\nfrom pkg.wire import (\n    HEADER,\n)\n",
        "wire.py": "HEADER = 16\ndef load():\n    import pkg._ext\n",
    })
    assert import_graph(root)["pkg._ext"] == {"pkg.wire"}
    assert cycles(import_graph(root)) == [["pkg._ext", "pkg.wire"]]


def test_boundary_checker_finds_io_anywhere(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "core/__init__.py": "",
        "core/clean.py": "from pkg.core import timing\n",  # a module named timing is fine
        "core/timing.py": "X = 1\n",
        "core/late.py": "def now():\n    from time import monotonic\n    return monotonic()\n",
        "shell.py": "import asyncio\n",  # outside the core: allowed
    })
    assert forbidden_imports(root, "pkg.core", IO_MODULES) == ["pkg.core.late:2 time"]
    assert forbidden_imports(root, "pkg.shell", {"pkg.core"}) == []


def test_long_file_checker_counts_lines(tmp_path: Path) -> None:
    (tmp_path / "ok.pxi").write_text("x = 1\n" * MAX_LINES)
    (tmp_path / "big.pxd").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "big.c").write_text("x;\n" * (MAX_LINES + 1))  # generated C is not source
    assert long_files([tmp_path], MAX_LINES) == [(tmp_path / "big.pxd", MAX_LINES + 1)]
