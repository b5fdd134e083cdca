"""The package's structure: no import cycles, counting imports anywhere in a file (a function-local
import hides a cycle, it does not break it), and `import pixclass` stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_imports() -> dict[str, set[str]]:
    """pixclass module -> the pixclass modules it imports (top level or inside functions)."""
    files = {
        ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (SRC / "pixclass").rglob("*.py")
    }
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            graph[mod] |= {t for t in targets if t in files and t != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(group)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    graph = module_imports()
    assert "pixclass.train.trainer" in graph and graph["pixclass.train.trainer"]  # the scan sees imports
    assert cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_import_pixclass_and_cli_help_load_no_torch() -> None:
    code = "import sys, pixclass, pixclass.cli; pixclass.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_the_use_side_never_imports_the_training_side() -> None:
    """Everything after training starts from the checkpoint alone: no module of ``infer/`` reaches a
    module of ``train/``, directly or through the core (imports inside functions count)."""
    graph = module_imports()
    use_side = [m for m in graph if m.startswith("pixclass.infer")]
    assert "pixclass.infer.predictor" in use_side
    for mod in use_side:
        reached = sorted(m for m in reachable(graph, mod) if m.startswith("pixclass.train"))
        assert reached == [], f"{mod} reaches the training side: {reached}"


def test_predicting_from_a_checkpoint_loads_no_training_module() -> None:
    code = (
        "import sys, pixclass.infer.predictor, pixclass.infer.serve.app, pixclass.infer.export; "
        "print(sorted(m for m in sys.modules if m.startswith('pixclass.train')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
