"""The serving package stays navigable: no import cycle, no module over 300 lines, no function over 80.

Static checks on the source (``ast``), no imports executed: they run in well under a second.
A cycle counts imports anywhere in a module (a function-level import closes a cycle as surely as a
top-level one; the old app -> ingress -> api -> service -> lifecycle -> rollout -> app cycle went
through ``rollout.redeploy_with_rollout``'s local import).
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVING = Path(__file__).resolve().parents[2] / "serving" / "recsys" / "serving"
PACKAGE = "recsys.serving"
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 80


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([PACKAGE, *parts])


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the recsys.serving modules it imports (``from pkg import submodule`` resolved)."""
    files = {module_name(root, p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                           for a in node.names]
            for t in targets:
                if t in files and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def oversized(root: Path) -> list[str]:
    """Modules over MAX_MODULE_LINES lines and functions over MAX_FUNCTION_LINES lines, as messages."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        n = len(text.splitlines())
        rel = path.relative_to(root)
        if n > MAX_MODULE_LINES:
            problems.append(f"{rel}: {n} lines (max {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{rel}:{node.lineno} {node.name}: {length} lines (max {MAX_FUNCTION_LINES})")
    return problems


def test_serving_has_no_import_cycle():
    graph = import_graph(SERVING)
    assert len(graph) > 30, f"found only {len(graph)} modules under {SERVING}"
    found = cycles(graph)
    assert found == [], "import cycles inside recsys.serving:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_rollout_imports_nothing_of_the_project():
    """The redeploy function is injected (app -> ingress -> service), so rollout.py is a leaf."""
    tree = ast.parse((SERVING / "models" / "rollout.py").read_text())
    project = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
               and any(name.startswith("recsys") for name in
                       ([a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""]))]
    assert project == []


def test_cycle_finder_sees_a_cycle(tmp_path):
    """The checker itself: a two-module cycle through a function-level import is reported."""
    (tmp_path / "a.py").write_text("from recsys.serving.b import f\n")
    (tmp_path / "b.py").write_text("def f():\n    from recsys.serving import a\n    return a\n")
    (tmp_path / "__init__.py").write_text("")
    assert cycles(import_graph(tmp_path)) == [["recsys.serving.a", "recsys.serving.b"]]


def test_no_module_over_300_lines_no_function_over_80():
    problems = oversized(SERVING)
    assert problems == [], "\n".join(problems)
