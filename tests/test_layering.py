"""The package's layers, checked from the source with `ast` (docs/architecture.md draws them).

Every module of lewm_fast belongs to one layer; a module imports only from its own layer or the layers below
(imports inside functions count: they are dependencies too; `if TYPE_CHECKING:` imports do not), and no
modules import each other in a circle. The layers, lowest first:

    foundation   _version, _build_flags, _checks, _io, _memory, _ext, capability, config
    kernels      kernels/ (Triton kernels and their plain-PyTorch references)
    model        vit, predictor, heads, model_surfaces, model, loss, sigreg
    planning     planning/ (planner -> optimizers -> engines -> op sets; kernels below them)
    api          lewm_fast/__init__.py (the names users import; `lf.interop` is loaded on first use)
    envs         envs/
    data         data/ (collection drives the envs)
    interop      interop/ (stable-worldmodel: conversion, drop-in solvers, accelerate)
    training     training/
    evaluation   evaluation/
    commands     commands/ (one per CLI subcommand)
    cli          cli
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lewm_fast"
LAYERS = [
    ("foundation", {"_version", "_build_flags", "_checks", "_io", "_memory", "_ext", "capability", "config"}),
    ("kernels", {"kernels"}),
    ("model", {"vit", "predictor", "heads", "model_surfaces", "model", "loss", "sigreg"}),
    ("planning", {"planning"}),
    ("api", {"lewm_fast"}),
    ("envs", {"envs"}),
    ("data", {"data"}),
    ("interop", {"interop"}),
    ("training", {"training"}),
    ("evaluation", {"evaluation"}),
    ("commands", {"commands"}),
    ("cli", {"cli"}),
]
LAYER_OF = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}


def modules() -> dict[str, Path]:
    """{dotted module name: file} of every module of the package (a package is its __init__.py)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = modules()


def unit(module: str) -> str:
    """The layer table's name for a module: lewm_fast.planning.engine -> planning, lewm_fast -> lewm_fast."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:`."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _known(name: str) -> str | None:
    """The package's module that `import name` loads last (a name inside a module: that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> list[tuple[str, int]]:
    """(imported module of lewm_fast, line) for every import in `module`. `from pkg import sub` imports the
    submodule `sub`; `from pkg import name` imports pkg."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    here = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            target = _known(name) if name.split(".")[0] == "lewm_fast" else None
            if target is not None and target != module:
                out.append((target, node.lineno))
    return out


def test_every_module_has_a_layer():
    missing = sorted({unit(m) for m in MODULES} - set(LAYER_OF))
    assert not missing, f"modules without a layer in tests/test_layering.py's LAYERS: {missing}"


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for module in MODULES:
        mine = LAYER_OF[unit(module)]
        for target, line in imports(module):
            theirs = LAYER_OF[unit(target)]
            if theirs > mine:
                upward.append(f"{MODULES[module].relative_to(ROOT)}:{line} ({LAYERS[mine][0]}) imports {target} "
                              f"({LAYERS[theirs][0]})")  # fmt: skip
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycles_finds_a_circle():
    """The check itself can fail: a circle of three and a lone node."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    by_module = {m: {t for t, _ in imports(m)} for m in MODULES}
    by_unit: dict[str, set[str]] = {}
    for m, targets in by_module.items():
        by_unit.setdefault(unit(m), set()).update(unit(t) for t in targets if unit(t) != unit(m))
    assert not cycles(by_unit), f"packages importing each other in a circle: {cycles(by_unit)}"
    assert not cycles(by_module), f"modules importing each other in a circle: {cycles(by_module)}"


def test_importing_lewm_fast_leaves_interop_for_first_use():
    code = (
        "import sys, lewm_fast as lf\n"
        "assert 'lewm_fast.interop' not in sys.modules, 'import lewm_fast imported interop'\n"
        "assert lf.interop.from_swm is sys.modules['lewm_fast.interop'].from_swm\n"
        "from lewm_fast import interop\n"
        "try:\n    lf.no_such_name\nexcept AttributeError as e:\n    assert 'no_such_name' in str(e)\n"
        "else:\n    raise AssertionError('lf.no_such_name')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _private_attributes_set_by(folder: Path) -> set[str]:
    """`_name`s assigned as `self._name = ...` by the classes under `folder`."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _on_self(node):
                names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _on_self(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")


@pytest.mark.parametrize("layer", ["interop", "evaluation", "commands", "training"])
def test_no_private_reads_of_planning_objects(layer):
    """Above planning nothing reads a planner's or an engine's private state (`obj._lock`, `obj._solves`...):
    what a caller needs is a constructor argument, a call's argument or a public attribute."""
    private = _private_attributes_set_by(PACKAGE / "planning")
    reads = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private and not _on_self(node):
                reads.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert not reads, "private state of lewm_fast/planning read from outside:\n" + "\n".join(reads)


def test_no_machine_paths():
    """No file of the package, its tests, benchmarks, C++ sources or CI names a path of one machine."""
    machine = ["/" + "work/", "/" + "root/", "/" + "home/"]  # spelled apart so that this file passes
    found = []
    for folder in ("lewm_fast", "tests", "benchmarks", "csrc", ".ci", ".github"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".cpp", ".h", ".sh", ".toml", ".yml", ".yaml", ".cfg", ""):
                text = path.read_text(errors="replace")
                found += [f"{path.relative_to(ROOT)}: {m}" for m in machine if m in text]
    for name in ("setup.py", "pyproject.toml"):
        text = (ROOT / name).read_text()
        found += [f"{name}: {m}" for m in machine if m in text]
    assert not found, "machine paths:\n" + "\n".join(found)
