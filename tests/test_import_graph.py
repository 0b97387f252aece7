"""Issue 23: no import circles among robcurve's modules, counting function-level imports too.

The graph has an edge A -> B for every ``import``/``from ... import`` of a robcurve module B in
module A, at module level or inside a function (``if TYPE_CHECKING:`` blocks excepted: they never
run). ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
Registries that load plugins lazily hold ``"module:object"`` strings, which are not imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "robcurve"


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for p in root.rglob("*.py"):
        parts = p.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """module -> {imported module: line} over every import statement that can run."""
    mods = modules(root)
    top = root.name
    graph: dict[str, dict[str, int]] = {m: {} for m in mods}

    def target(mod: str, name: str | None) -> str | None:
        if name and f"{mod}.{name}" in mods:
            return f"{mod}.{name}"
        return mod if mod in mods else None

    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]

        def visit(node: ast.AST, name: str = name, pkg: str = pkg) -> None:
            for ch in ast.iter_child_nodes(node):
                if isinstance(ch, ast.If) and "TYPE_CHECKING" in ast.unparse(ch.test):
                    continue
                found: list[str | None] = []
                if isinstance(ch, ast.Import):
                    found = [target(a.name, None) for a in ch.names if a.name.split(".")[0] == top]
                elif isinstance(ch, ast.ImportFrom):
                    mod = ch.module or ""
                    if ch.level:
                        base = pkg.split(".")[: len(pkg.split(".")) - (ch.level - 1)]
                        mod = ".".join(base + ([mod] if mod else []))
                    if mod.split(".")[0] == top:
                        found = [target(mod, a.name) for a in ch.names]
                for t in found:
                    if t and t != name:
                        graph[name].setdefault(t, ch.lineno)
                visit(ch, name, pkg)

        visit(ast.parse(path.read_text(encoding="utf-8")))
    return graph


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(graph.get(w, {}))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_robcurve_has_no_import_circles():
    g = import_graph(PKG)
    assert len(g) > 60 and sum(len(v) for v in g.values()) > 200  # the graph was really read
    found = circles(g)
    detail = ["; ".join(f"{a} -> {b} (line {g[a][b]})" for a in c for b in g[a] if b in c) for c in found]
    assert not found, "import circles: " + " | ".join(detail)


def test_the_detector_finds_a_circle_made_by_a_function_level_import(tmp_path):
    pkg = tmp_path / "robcurve"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from robcurve.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from robcurve import c\n"
                                      "def f():\n    from .. import a\n")
    (pkg / "c.py").write_text("import robcurve.a\n")
    g = import_graph(pkg)
    assert g["robcurve.sub.b"] == {"robcurve.a": 5}  # relative, function-level; the TYPE_CHECKING one ignored
    assert circles(g) == [["robcurve.a", "robcurve.sub.b"]]
    (pkg / "sub" / "b.py").write_text("def f():\n    return 1\n")
    assert circles(import_graph(pkg)) == []


def test_lists_beside_the_registries_agree_with_them():
    """The light modules (config, leaderboard schema) keep literal lists so they import without torch;
    each must equal the registry it mirrors (issue 23: no silent drift)."""
    import typing

    from robcurve.attacks.base import BACKEND_ADAPTERS, BACKENDS
    from robcurve.data.base import DATASETS
    from robcurve.geometry.directions import directions
    from robcurve.leaderboard import schema
    from robcurve.naming import dataset_family
    from robcurve.run.config import DirectionCfg, RunConfig

    # "custom" takes a Python callable, so only the API offers it (a config file cannot name one)
    assert set(typing.get_args(DirectionCfg.model_fields["kind"].annotation)) == set(directions.names()) - {"custom"}
    assert typing.get_args(RunConfig.model_fields["attack_backend"].annotation) == BACKENDS
    assert set(BACKENDS) == {"robcurve", *BACKEND_ADAPTERS}
    assert {dataset_family(d) for d in DATASETS.names()} <= set(schema.DATASETS)


def function_level_imports(root: Path) -> list[tuple[str, int, str, bool]]:
    """(file, line, statement, says why) for every import of a robcurve module inside a function.
    "Says why": the line itself or the comment line above it contains ``deferred:``."""
    out = []
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()

        def visit(node: ast.AST, inside: bool, path: Path = path, lines: list[str] = lines) -> None:
            for ch in ast.iter_child_nodes(node):
                if isinstance(ch, ast.FunctionDef | ast.AsyncFunctionDef):
                    visit(ch, True)
                    continue
                if inside and isinstance(ch, ast.Import | ast.ImportFrom):
                    mods = [a.name for a in ch.names] if isinstance(ch, ast.Import) else [ch.module or ""]
                    if ch.__class__ is ast.ImportFrom and ch.level or any(m.split(".")[0] == root.name for m in mods):
                        here = lines[ch.lineno - 1]
                        above = lines[ch.lineno - 2] if ch.lineno > 1 else ""
                        why = "deferred:" in here or above.strip().startswith("#") and "deferred:" in above
                        out.append((str(path.relative_to(root.parent)), ch.lineno, ast.unparse(ch), why))
                visit(ch, inside)

        visit(ast.parse("\n".join(lines)), False)
    return out


def test_function_level_imports_of_robcurve_modules_say_why():
    """Issue 23: a robcurve module is imported inside a function only to defer a heavy or optional dependency
    (torch, pandas, scipy, matplotlib; or pydantic/yaml for `robcurve --help`), and the comment says which."""
    found = function_level_imports(PKG)
    silent = [f"{f}:{n}: {s}" for f, n, s, why in found if not why]
    assert not silent, "function-level imports without a '# deferred: <why>' comment:\n" + "\n".join(silent)
    assert len(found) < 80  # 156 before this check (69 after): a module-level import is the default


def test_the_function_level_import_check_flags_a_silent_one(tmp_path):
    pkg = tmp_path / "robcurve"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    # deferred: torch\n    from robcurve import b\n\n\n"
                              "def g():\n    from robcurve import b\n    return b\n")
    (pkg / "b.py").write_text("")
    found = function_level_imports(pkg)
    assert [(n, why) for _, n, _, why in found] == [(3, True), (7, False)]
