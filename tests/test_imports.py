"""The `icam` package imports without circles.

The graph is read from the source with `ast`, not by importing: one edge per import of a
module of the package, at module level or inside a function (a deferred import is still a
dependency), relative imports resolved, and `from icam.x import y` pointing at `icam.x.y` when
y is a submodule. A parent package is not an edge of its submodules' imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import icam

PACKAGE_DIR = Path(icam.__file__).parent


def module_names(package_dir: Path) -> dict[str, Path]:
    """{dotted module name: file} of every module under `package_dir`."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def known_module(name: str, modules: dict[str, Path]) -> str | None:
    """`name`, or the longest of its prefixes that is a module of the package."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imported_modules(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `module` imports anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    package_parts = package.split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package_parts[: len(package_parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                     for alias in node.names]
        else:
            continue
        found.update(known_module(name, modules) for name in names)
    return found - {None, module}


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    modules = module_names(package_dir)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search)."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph[node]):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def test_the_package_has_no_import_circle():
    cycle = find_cycle(import_graph(PACKAGE_DIR))
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_a_circle_through_a_deferred_relative_import_is_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("")
    (package / "store.py").write_text("def home():\n    from pkg.data import reader\n")
    (package / "data" / "reader.py").write_text("from ..store import home\n")
    assert find_cycle(import_graph(package)) == ["pkg.data.reader", "pkg.store",
                                                 "pkg.data.reader"]
