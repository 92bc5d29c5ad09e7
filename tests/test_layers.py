"""The package's import graph: no circle, and no module imports from a layer above its own.

Every import counts, the lazy ones inside functions and those under TYPE_CHECKING too:
a lazy import hides a circle from Python, not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent / "seqsched"

# Lowest first. A module may import from its own layer (without a circle) or any below.
LAYERS: list[tuple[str, ...]] = [
    ("seqsched.request", "seqsched.signals", "seqsched.threads", "seqsched.workload"),
    ("seqsched.schedule",),
    ("seqsched.data",),
    ("seqsched.engine",),
    ("seqsched.simulate",),
    ("seqsched.predict",),
    ("seqsched.pipeline", "seqsched.metrics", "seqsched.eta", "seqsched.dry_run", "seqsched.config"),
    ("seqsched.build",),
    ("seqsched.bench", "seqsched.collect", "seqsched.serve"),
    ("seqsched.job", "seqsched.distributed", "seqsched.ray_serve", "seqsched.ray_replicas"),
    ("seqsched.api",),
    ("seqsched.cli", "seqsched.__main__", "seqsched"),
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(path: Path) -> set[str]:
    """The seqsched modules a file imports, wherever in the file the import is."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name == "seqsched" or name.startswith("seqsched."):
                target = _resolve(name)
                if target is not None:
                    out.add(target)
    return out


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "seqsched" and module.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def graph() -> dict[str, set[str]]:
    return {module: imports_of(path) - {module} for module, path in MODULES.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle() -> None:
    assert circles(graph()) == []


def test_no_module_imports_from_a_layer_above() -> None:
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_the_checks_can_fail() -> None:
    """A circle and an upward import are found on plain data."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("seqsched.schedule.stream") < layer_of("seqsched.job")
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("elsewhere.module")


def test_the_scheduler_imports_nothing_above_request() -> None:
    for module, targets in graph().items():
        if module.startswith("seqsched.schedule"):
            assert all(t == "seqsched.request" or t.startswith("seqsched.schedule") for t in targets), module


def test_execution_does_not_import_simulation() -> None:
    """Real engines run nothing modelled: simulation sits above them, never inside."""
    for module, targets in graph().items():
        if module.startswith("seqsched.engine"):
            assert not any(t.startswith("seqsched.simulate") for t in targets), module


def test_a_batch_job_does_not_import_the_benchmark_package() -> None:
    for module, targets in graph().items():
        if module == "seqsched.job" or module.startswith("seqsched.job."):
            assert not any(t.startswith("seqsched.bench") for t in targets), module
