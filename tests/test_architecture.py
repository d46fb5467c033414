"""The package's import structure, read from its sources (nothing is imported here).

* ``xent._engine`` is the only module of ``xent`` that imports ``xent.kernels``;
* the kernels import nothing from ``xent`` (only each other and third-party packages);
* the modules of ``xent`` import each other without cycles (function-level imports count);
* ``_dask`` imports nothing from ``xent``: it only drives the front ends' block functions.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "xent"
KERNELS = ROOT / "kernels"


def imports_of(path: Path, package: str) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([package] + ([base] if base else []))
            found.add(base)
            # `from xent import kernels` names a module through the package
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def xent_modules() -> dict[str, set[str]]:
    return {f"xent.{p.stem}": imports_of(p, "xent") for p in sorted(PACKAGE.glob("*.py"))}


def test_only_the_engine_imports_the_kernels():
    importers = {
        mod
        for mod, names in xent_modules().items()
        if any(n == "xent.kernels" or n.startswith("xent.kernels.") for n in names)
    }
    assert importers == {"xent._engine"}


def test_kernels_import_nothing_from_xent():
    for path in sorted(KERNELS.glob("*.py")):
        names = imports_of(path, "xent.kernels")
        outside = {n for n in names if n.startswith("xent") and not n.startswith("xent.kernels")}
        assert not outside, (path.name, outside)


def test_dask_adapters_import_nothing_from_xent():
    names = xent_modules()["xent._dask"]
    assert not {n for n in names if n == "xent" or n.startswith("xent.")}, names


def test_no_import_cycles():
    modules = xent_modules()
    graph = {mod: {n for n in names if n in modules and n != mod} for mod, names in modules.items()}
    # `from xent import _engine` records "xent._engine"; `import xent` alone is the package
    state, stack = {}, []

    def visit(mod):
        state[mod] = "open"
        stack.append(mod)
        for dep in sorted(graph[mod]):
            if state.get(dep) == "open":
                cycle = stack[stack.index(dep) :] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[mod] = "done"

    for mod in sorted(graph):
        if mod not in state:
            visit(mod)
