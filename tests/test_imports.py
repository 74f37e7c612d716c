"""The import graph of ``src/gradprobe``: no cycles, and no layer imports a higher one.

The graph is read with ``ast`` from every source file, so it sees module-level AND
function-level imports (also ones that never ran in this process), and
``importlib.import_module`` of a literal name. ``from a import b``
points at ``a.b`` when that is a module, at ``a`` otherwise; relative imports are resolved
against the importing module's package. Importing a module does not count as importing its
parent packages: those only run their ``__init__``.

The layers (docs/architecture.md, "Layering") follow the flow
``spec -> nets -> train (+ probe callbacks) -> record -> store -> readers``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "gradprobe"

# Lowest first. A module may import its own layer and the ones below, never one above.
# The key is the longest dotted prefix after "gradprobe." that matches.
LAYERS: list[tuple[str, ...]] = [
    ("_version", "errors", "limits", "spec_params", "autopilot.options", "spec", "nets", "data",
     "budget", "sequence_tasks", "native", "threads", "progress"),
    ("probe", "record", "outputs", "kwinputs"),
    ("train", "integrations", "autopilot"),
    ("store", "api"),
    ("theory",),
    ("sweeps", "diagnosis", "measure", "reproduce", "autopilot.repair",
     "autopilot.study"),
    ("report",),
    ("",),  # the root package: the public API, resolved lazily
    ("app", "serve"),
    ("cli", "__main__"),
]

# Upward imports known when this test was written, each to be removed by the change that
# fixes it (issue 11: the probe stops importing integrations). A listed import that is gone
# fails too, so the list cannot go stale.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


# Beyond the layers: the theory reads records and specs, it never measures or trains a model
# (running the probe on a live model is gradprobe.measure's job, one layer up).
NEVER_IMPORTS: dict[str, tuple[str, ...]] = {
    "gradprobe.theory": ("gradprobe.probe", "gradprobe.train", "gradprobe.integrations"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def _is_import_call(node: ast.Call) -> bool:
    """``importlib.import_module("literal")`` or ``__import__("literal")``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return (
        name in ("import_module", "__import__")
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Internal modules ``module`` imports anywhere in its file (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_import_call(node):
            found.add(node.args[0].value)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (
                _resolve_relative(module, is_package, node.level, node.module)
                if node.level
                else node.module or ""
            )
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != module}


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as one cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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
                components.append(_one_cycle(graph, set(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def _one_cycle(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A concrete cycle inside a strongly connected component, for the failure message."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def layer_of(module: str) -> int:
    rest = module[len(ROOT) + 1:] if module != ROOT else ""
    best, best_len = None, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            matches = rest == name or rest.startswith(f"{name}.") or (name == "" and rest == "")
            if matches and len(name) > best_len:
                best, best_len = i, len(name)
    if best is None:
        raise KeyError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted(
        (src, dst) for src, targets in graph.items() for dst in targets
        if layer_of(dst) > layer_of(src)
    )


# ------------------------------------------------------------------------------------ tests


def test_the_graph_sees_function_level_from_and_relative_imports(tmp_path):
    pkg = tmp_path / "gradprobe"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("X = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text(
        "def f():\n    from gradprobe.sub import b\n    from .. import low\n"
        "    importlib.import_module('gradprobe.sub')\n"
    )
    (pkg / "sub" / "b.py").write_text("from . import a\nfrom gradprobe.low import X\n")
    known = {"gradprobe", "gradprobe.low", "gradprobe.sub", "gradprobe.sub.a", "gradprobe.sub.b"}
    a = imports_of("gradprobe.sub.a", pkg / "sub" / "a.py", known)
    b = imports_of("gradprobe.sub.b", pkg / "sub" / "b.py", known)
    assert a == {"gradprobe.sub.b", "gradprobe.low", "gradprobe.sub"}
    assert b == {"gradprobe.sub.a", "gradprobe.low"}
    graph = {"gradprobe.sub.a": a, "gradprobe.sub.b": b}
    graph |= {"gradprobe.low": set(), "gradprobe.sub": set()}
    cycles = find_cycles(graph)
    assert cycles == [["gradprobe.sub.a", "gradprobe.sub.b", "gradprobe.sub.a"]]


def test_a_longer_cycle_is_reported_as_a_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_every_module_has_a_layer():
    for module in source_modules():
        layer_of(module)


def test_no_layer_imports_a_higher_one():
    found = upward_imports(import_graph())
    new = [pair for pair in found if pair not in KNOWN_UPWARD]
    assert not new, "upward imports:\n" + "\n".join(
        f"{s} (layer {layer_of(s)}) imports {d} (layer {layer_of(d)})" for s, d in new
    )
    stale = [pair for pair in KNOWN_UPWARD if pair not in found]
    assert not stale, f"fixed, remove from KNOWN_UPWARD: {stale}"


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def forbidden_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted(
        (src, dst) for src, targets in graph.items() for dst in targets
        for package, banned in NEVER_IMPORTS.items()
        if _under(src, package) and any(_under(dst, b) for b in banned)
    )


def test_the_theory_never_runs_the_probe_or_training():
    found = forbidden_imports(import_graph())
    assert not found, "\n".join(f"{s} imports {d}" for s, d in found)


def test_the_rules_catch_what_issue_11_found():
    """The three import defects of the code before issue 11, as a small graph."""
    before = {
        "gradprobe.theory.meanfield": {"gradprobe.theory.network"},
        "gradprobe.theory.network": {"gradprobe.theory.finite_width"},
        "gradprobe.theory.finite_width": {"gradprobe.theory.meanfield"},
        "gradprobe.theory.compare": {"gradprobe.probe"},
        "gradprobe.store": {"gradprobe"},
        "gradprobe.probe": set(),
        "gradprobe": set(),
    }
    assert find_cycles(before) == [[
        "gradprobe.theory.finite_width", "gradprobe.theory.meanfield",
        "gradprobe.theory.network", "gradprobe.theory.finite_width",
    ]]
    assert forbidden_imports(before) == [("gradprobe.theory.compare", "gradprobe.probe")]
    assert upward_imports(before) == [("gradprobe.store", "gradprobe")]


@pytest.mark.parametrize("module", ["gradprobe.probe", "gradprobe.train", "gradprobe.theory"])
def test_lower_layers_import_without_the_report_or_the_cli(module):
    """What the static check promises, seen at run time in a fresh interpreter."""
    import subprocess
    import sys

    code = (
        f"import sys, {module}\n"
        "bad = [m for m in sys.modules if m.startswith(('gradprobe.report', 'gradprobe.cli',"
        " 'gradprobe.app', 'matplotlib'))]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
