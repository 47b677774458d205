"""The package's modules form layers: no import cycle anywhere, counting imports inside functions
(only ``if TYPE_CHECKING:`` imports, which never run, are left out)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ticket_zoo"


def _imports(path: Path, modules: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    type_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only or not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif node.level == 0 and (node.module or "").startswith("ticket_zoo."):
            found.add(node.module.split(".")[1])
    return (found & modules) - {path.stem}


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    return {m: _imports(PACKAGE / f"{m}.py", modules) for m in modules}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep] if dep in path else [node, dep]
            if dep not in state and (found := visit(dep, [*path, dep])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_module_imports_its_way_back_to_itself():
    graph = _graph()
    assert {"config", "train", "find", "transfer_grid", "data", "hub", "api", "zoo"} <= set(graph)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_check_can_fail():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_foundations_import_nothing_above_them():
    # The schema, the registry, errors and the run files are what every stage builds on.
    graph = _graph()
    assert graph["errors"] == set()
    assert graph["registry"] <= {"errors"}
    assert graph["config"] <= {"errors", "_recipe"}
    assert graph["runfiles"] <= {"errors", "_io"}
