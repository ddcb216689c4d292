"""The module import graph of a package, read from source with `ast` (nothing is imported).

Every import statement counts, wherever it stands: at module level, inside a function, under
`if TYPE_CHECKING:`; so does a module named by string to `importlib.import_module` (a literal
argument, or a module-level tuple of names such as a command registry). `from pkg import name`
is an edge to `pkg.name` when that is a module of the package, otherwise to `pkg`. Relative
imports are resolved. Cython sources (`.pyx` and the
`.pxi` files it includes) belong to the module named after the `.pyx`; their Python `import`
lines are read line by line (`cimport` is C-level and not counted).

    graph = import_graph(Path("enclave"))          # {"enclave.agent.daemon": {"enclave.cert", ...}}
    cycles(graph)                                  # [["enclave.a", "enclave.b"], ...]
    package_graph(graph, depth=2)                  # {"enclave.agent": {"enclave.cert", ...}}
    forbidden_imports(Path("enclave"), "enclave.proto", {"time"})   # ["enclave/proto/x.py:12 time"]
    long_files([Path("enclave")], 1000)            # [(Path("enclave/big.py"), 1507)]

Used by tests/unit/structure (the structure test) and to draw docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

Graph = dict[str, set[str]]


@dataclass(frozen=True)
class Import:
    """One import statement: who imports, which modules it names, and where it stands."""

    module: str
    targets: tuple[str, ...]  # dotted names as written (resolved if relative), before filtering
    line: int
    local: bool  # inside a function body


def module_name(root: Path, path: Path) -> str:
    """`enclave/platform/cli.py` under root `enclave` -> `enclave.platform.cli`."""
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path) -> dict[str, Path]:
    """Every Python module of the package (and the `.pyx` extension modules), by dotted name."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")) + sorted(root.rglob("*.pyx")):
        if "__pycache__" in path.parts:
            continue
        found[module_name(root, path)] = path
    return found


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _python_imports(module: str, path: Path, source: str) -> list[Import]:
    tree = ast.parse(source, filename=str(path))
    is_package = path.name == "__init__.py"
    out: list[Import] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                names = tuple(alias.name for alias in child.names)
                out.append(Import(module, names, child.lineno, local))
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(module, is_package, child.level, child.module)
                names = (base, *(f"{base}.{alias.name}" for alias in child.names))
                out.append(Import(module, names, child.lineno, local))
            visit(child, inner)

    visit(tree, False)
    out.extend(_dynamic_imports(module, tree))
    return out


def _dynamic_imports(module: str, tree: ast.Module) -> list[Import]:
    """Modules named by string to `importlib.import_module`: the literal argument of a call, and
    the strings of a module-level tuple or list (a registry such as COMMAND_MODULES) in a module
    that calls it. Whether a string names a module of the package is decided by the caller."""
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and (
        (isinstance(n.func, ast.Attribute) and n.func.attr == "import_module")
        or (isinstance(n.func, ast.Name) and n.func.id == "import_module"))]
    if not calls:
        return []
    out: list[Import] = []
    for call in calls:
        for arg in call.args[:1]:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                out.append(Import(module, (arg.value,), call.lineno, True))
    for stmt in tree.body:
        value = stmt.value if isinstance(stmt, ast.Assign | ast.AnnAssign) else None
        if isinstance(value, ast.Tuple | ast.List):
            names = tuple(e.value for e in value.elts
                          if isinstance(e, ast.Constant) and isinstance(e.value, str))
            if names:
                out.append(Import(module, names, stmt.lineno, False))
    return out


_CYTHON_IMPORT = re.compile(r"^(\s*)(import\s+[\w.]+.*|from\s+[\w.]+\s+import\s+.*)$")


def _cython_imports(module: str, path: Path) -> list[Import]:
    """Python imports of a `.pyx` and of every `.pxi` beside it that it includes."""
    out: list[Import] = []
    sources = [path]
    text = path.read_text()
    for inc in re.findall(r'^include\s+"([^"]+)"', text, flags=re.M):
        sources.append(path.parent / inc)
    for src in sources:
        lines = src.read_text().splitlines()
        i = 0
        while i < len(lines):
            match = _CYTHON_IMPORT.match(lines[i])
            start = i
            if match is None:
                i += 1
                continue
            stmt = match.group(2)
            while stmt.count("(") > stmt.count(")") and i + 1 < len(lines):
                i += 1
                stmt += "\n" + lines[i]
            i += 1
            try:
                parsed = ast.parse(stmt)
            except SyntaxError:
                continue
            for node in parsed.body:
                if isinstance(node, ast.Import):
                    names = tuple(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = (node.module, *(f"{node.module}.{a.name}" for a in node.names))
                else:
                    continue
                out.append(Import(module, names, start + 1, bool(match.group(1))))
    return out


@functools.lru_cache(maxsize=4096)
def _file_imports(module: str, path: Path, stamp: tuple[int, int]) -> tuple[Import, ...]:
    """One module's imports, parsed once per (path, mtime, size)."""
    if path.suffix == ".pyx":
        return tuple(_cython_imports(module, path))
    return tuple(_python_imports(module, path, path.read_text()))


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def imports(root: Path) -> list[Import]:
    """Every import statement in the package rooted at `root` (a directory with __init__.py)."""
    out: list[Import] = []
    for module, path in _modules(root).items():
        stamp = _stamp(path)
        if path.suffix == ".pyx":  # its .pxi includes count too
            stamp = (max([stamp[0], *(_stamp(p)[0] for p in path.parent.glob("*.pxi"))]), 0)
        out.extend(_file_imports(module, path, stamp))
    return out


def _edges(stmt: Import, known: Iterable[str]) -> set[str]:
    """The package's modules one import statement runs: the most specific known name."""
    known_set = set(known)
    hits: set[str] = set()
    for target in stmt.targets:
        if target in known_set:
            hits.add(target)
    # `from pkg import sub`: the edge is to pkg.sub, not also to pkg (unless pkg is a plain module)
    return {
        h for h in hits if not any(o != h and o.startswith(h + ".") for o in hits)
    } - {stmt.module}


def import_graph(root: Path) -> Graph:
    """Module -> the package's modules it imports (anywhere in its body)."""
    known = set(_modules(root))
    graph: Graph = {m: set() for m in known}
    for stmt in imports(root):
        graph[stmt.module] |= _edges(stmt, known)
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (each one is a cycle), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:  # Tarjan, iterative over an explicit work stack
        nonlocal counter
        work: list[tuple[str, list[str]]] = [(v, sorted(graph.get(v, ())))]
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, todo = work[-1]
            if todo:
                w = todo.pop(0)
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, sorted(graph.get(w, ()))))
                elif w in on_stack:
                    low[node] = min(low[node], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp: list[str] = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(found)


def package_graph(graph: Mapping[str, set[str]], depth: int = 2) -> Graph:
    """The graph collapsed to packages `depth` names deep (enclave.agent.daemon -> enclave.agent);
    edges inside one package are dropped."""

    def room(name: str) -> str:
        return ".".join(name.split(".")[:depth])

    out: Graph = {}
    for src, targets in graph.items():
        out.setdefault(room(src), set())
        for dst in targets:
            if room(dst) != room(src):
                out[room(src)].add(room(dst))
    return out


def cycle_edges(root: Path, cycle: Iterable[str]) -> list[str]:
    """The import statements that tie one cycle together, as "module:line -> target"."""
    members = set(cycle)
    known = set(_modules(root))
    out: list[str] = []
    for stmt in imports(root):
        if stmt.module in members:
            for target in sorted(_edges(stmt, known) & members):
                where = " (inside a function)" if stmt.local else ""
                out.append(f"{stmt.module}:{stmt.line} -> {target}{where}")
    return out


def forbidden_imports(root: Path, package: str, names: set[str]) -> list[str]:
    """Imports of any of ``names`` (top-level names: "time" also catches "from time import x")
    by ``package`` or its submodules, as "module:line name"."""
    out: list[str] = []
    for stmt in imports(root):
        if stmt.module != package and not stmt.module.startswith(package + "."):
            continue
        for target in stmt.targets:
            if target in names or target.split(".")[0] in names or any(
                target.startswith(n + ".") for n in names
            ):
                out.append(f"{stmt.module}:{stmt.line} {target}")
                break
    return out


SOURCE_SUFFIXES = (".py", ".pyx", ".pxi", ".pxd")


def long_files(roots: Iterable[Path], limit: int,
               suffixes: tuple[str, ...] = SOURCE_SUFFIXES) -> list[tuple[Path, int]]:
    """Source files under ``roots`` with more than ``limit`` lines, longest first."""
    out: list[tuple[Path, int]] = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix in suffixes and path.is_file() and "__pycache__" not in path.parts:
                n = len(path.read_text(errors="replace").splitlines())
                if n > limit:
                    out.append((path, n))
    return sorted(out, key=lambda item: -item[1])


def layers(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Rooms by layer for an acyclic graph: layer 0 imports nothing, layer n only lower ones."""
    level: dict[str, int] = {}

    def depth(node: str, seen: frozenset[str] = frozenset()) -> int:
        if node not in level:
            if node in seen:
                raise ValueError(f"cycle through {node}")
            below = [depth(t, seen | {node}) for t in graph.get(node, ()) if t != node]
            level[node] = 1 + max(below, default=-1)
        return level[node]

    for node in graph:
        depth(node)
    out: list[list[str]] = [[] for _ in range(1 + max(level.values(), default=-1))]
    for node in sorted(level):
        out[level[node]].append(node)
    return out


def matrix(graph: Mapping[str, set[str]], prefix: str = "") -> str:
    """The graph as text, one row per room bottom-up: "x" where the row imports the column.
    An acyclic graph has every "x" left of the diagonal."""
    order = [n for layer in layers(graph) for n in layer]
    names = [n.removeprefix(prefix) or n for n in order]
    width = max(map(len, names))
    head = " " * (width + 2) + " ".join(f"{i:>2}" for i in range(len(order)))
    rows = [head]
    for i, (node, name) in enumerate(zip(order, names, strict=True)):
        cells = ["x" if t in graph.get(node, ()) else ("." if j == i else " ")
                 for j, t in enumerate(order)]
        rows.append(f"{name:<{width}}  " + " ".join(f"{c:>2}" for c in cells) + f"   {i:>2}")
    return "\n".join(rows)


if __name__ == "__main__":  # python3 -m tests.support.imports [PACKAGE_DIR]: the rooms' graph
    import sys

    root = Path(sys.argv[1] if len(sys.argv) > 1 else "enclave")
    rooms = package_graph(import_graph(root))
    prefix = root.name + "."
    for n, layer in enumerate(layers(rooms)):
        for room in layer:
            targets = ", ".join(sorted(t.removeprefix(prefix) for t in rooms[room]))
            print(f"layer {n:<2}  {room.removeprefix(prefix):<10} -> {targets or '-'}")
    print()
    print(matrix(rooms, prefix=prefix))
