"""The house a newcomer can find their way in (issue 19): imports only go down, one HTTP boundary."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "h2o_sdk"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The h2o_sdk modules ``path`` imports (at run time and for type checking alike)."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rsplit(".", 1)[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            if target.startswith("h2o_sdk"):
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("h2o_sdk"))
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {target for target in _imports(path) if target in files and target != name}
            for name, path in files.items()}


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = _graph()
    # Packages re-export their modules, and the top-level package resolves names lazily: a module
    # importing its own package's __init__ is not a circle of the code that runs.
    graph = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}
    seen: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state = seen.get(name)
        if state == 1:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(name):], name]))
        if state == 2:
            return
        seen[name] = 1
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        seen[name] = 2

    for name in sorted(graph):
        visit(name, [])


def test_requests_and_urllib3_are_imported_by_the_http_boundary_only() -> None:
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(name.split(".")[0] in ("requests", "urllib3") for name in names):
                importers.add(_module(path))
    assert importers == {"h2o_sdk._http"}


def test_the_client_is_a_small_facade() -> None:
    assert len((PACKAGE / "_client.py").read_text(encoding="utf-8").splitlines()) < 450
