"""The package's shape, made permanent: layer order, no import loops, one home for run-directory names.

Reads ``src/buscad`` with :mod:`ast` (nothing is imported), so it checks every import, including the
lazy ones inside functions. docs/architecture.md ("Layers") explains the order.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "buscad"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("buscad", "buscad.errors", "buscad.io", "buscad.recipes", "buscad.hardware", "buscad.postprocess",
     "buscad.weights"),
    ("buscad.data",),
    ("buscad.models", "buscad.losses", "buscad.checkpoint", "buscad.rundir", "buscad.prediction", "buscad.ensemble"),
    ("buscad.training",),
    ("buscad.evaluation", "buscad.inference"),
    ("buscad.reporting",),
    ("buscad.workflows",),
    ("buscad.service", "buscad.testing"),
    ("buscad.demo",),
    ("buscad.cli",),
)
"""Lowest first. A module may import its own layer and those below, never one above."""

PEERS = ("buscad.evaluation", "buscad.inference")
"""Same layer, but neither may import the other (post-processing both need lives in ``postprocess``)."""

LAZY_PUBLIC = {("buscad", "buscad.inference.predictor")}
"""The one allowed upward import: ``buscad.Predictor``, resolved lazily by the root ``__getattr__``."""

RUN_DIR_NAMES = ("predictions.csv", "per_image.csv", "metrics.json", "summary.json", "summary.csv",
                 "summary.md", "run_info.json", "cases.csv", "history.csv", "time_budget.json", "best.ckpt",
                 "last.ckpt", "config.yaml", "fold_", "report.html", "report.md")
"""File names of the run-directory layout: spelled in code only by ``buscad.rundir``."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom, path: Path) -> list[str]:
    if node.level:
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    # ``from buscad import rundir`` imports the submodule, ``from buscad import LABELS`` the package.
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]


def imports(module: str) -> Iterator[tuple[str, int]]:
    """``(imported buscad module, line)`` for every import statement of ``module`` (lazy ones too)."""
    path = MODULES[module]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            targets = _resolve(module, node, path)
        else:
            continue
        for target in targets:
            if target == "buscad" or target.startswith("buscad."):
                while target not in MODULES and "." in target:
                    target = target.rsplit(".", 1)[0]
                yield target, node.lineno


def _contains(unit: str, module: str) -> bool:
    """``unit`` (a package or module of :data:`LAYERS`) holds ``module``; the root ``buscad`` holds only itself."""
    return module == unit or (unit != "buscad" and module.startswith(unit + "."))


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the most specific unit holding ``module``; -1 when none does."""
    best, index = "", -1
    for i, layer in enumerate(LAYERS):
        for unit in layer:
            if _contains(unit, module) and len(unit) > len(best):
                best, index = unit, i
    return index


def unit_of(module: str) -> str:
    return max((u for layer in LAYERS for u in layer if _contains(u, module)), key=len)


def test_every_module_has_a_layer() -> None:
    assert [m for m in MODULES if layer_of(m) < 0] == []


def test_no_import_reaches_up_a_layer() -> None:
    upward = []
    for module in MODULES:
        for target, line in imports(module):
            if (module, target) in LAZY_PUBLIC:
                continue
            if layer_of(target) > layer_of(module):
                upward.append(f"{module}:{line} → {target}")
    assert upward == [], "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_evaluation_and_inference_do_not_import_each_other() -> None:
    crossing = [f"{m}:{line} → {t}" for m in MODULES for t, line in imports(m)
                if unit_of(m) in PEERS and unit_of(t) in PEERS and unit_of(m) != unit_of(t)]
    assert crossing == []


def test_evaluation_does_not_import_training() -> None:
    assert [(m, t) for m in MODULES for t, _ in imports(m)
            if m.startswith("buscad.evaluation") and t.startswith("buscad.training")] == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_loops() -> None:
    graph = {m: {t for t, _ in imports(m) if (m, t) not in LAZY_PUBLIC and t != m} for m in MODULES}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_loop() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _string_constants(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """String literals in code; documentation (module/class/function/attribute docstrings) is left out."""
    docstrings = {id(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value, node.lineno


@pytest.mark.parametrize("name", RUN_DIR_NAMES)
def test_only_rundir_spells_run_directory_names(name: str) -> None:
    spelled = [f"{module}:{line}" for module, path in MODULES.items() if module != "buscad.rundir"
               for text, line in _string_constants(ast.parse(path.read_text(encoding="utf-8"))) if name in text]
    assert spelled == [], f"{name!r} spelled outside buscad.rundir"


@pytest.mark.parametrize(("function", "home"), [("json_safe", "buscad.io"),
                                                ("lesion_probability", "buscad.postprocess.probability"),
                                                ("lesion_mask", "buscad.postprocess.probability"),
                                                ("p_malignant_given_lesion", "buscad.postprocess.probability"),
                                                ("parse_spacing", "buscad.inference.measure"),
                                                ("refine_prediction", "buscad.postprocess.refine")])
def test_one_definition(function: str, home: str) -> None:
    defined = {module for module, path in MODULES.items()
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.FunctionDef) and node.name == function}
    assert defined == {home}
