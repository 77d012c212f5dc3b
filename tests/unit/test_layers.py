"""The layering, checked from the source: the core imports no adapter, framework, database
driver or SMTP library; an adapter depends on the core and the shared runtime, never on the
composition root; and no two modules import each other, directly or in a longer cycle."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
THIRD_PARTY_CORE = {"transitions", "pydantic", "pydantic_core", "email_validator"}
IO_MODULES = {"sqlite3", "smtplib", "socket", "asyncio", "http", "urllib.request", "ssl"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports at run time (``TYPE_CHECKING`` blocks
    are skipped: they are not imported when the program runs)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                found.add(base)
                found.update(f"{base}.{a.name}" for a in child.names)
            visit(child)

    visit(tree)
    return found


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}
GRAPH = {
    name: {m for m in imports(path) if m in MODULES and m != name} for name, path in MODULES.items()
}


def test_the_core_imports_no_adapter_framework_or_io_library() -> None:
    for name, path in MODULES.items():
        if not name.startswith("interactions_core") or ".testing.contracts" in name:
            continue
        outside = {m.split(".")[0] for m in imports(path) if not m.startswith("interactions_core")}
        stdlib_io = {m for m in imports(path) if m in IO_MODULES}
        assert not outside - THIRD_PARTY_CORE - _stdlib(), (name, outside - THIRD_PARTY_CORE)
        assert not stdlib_io, (name, stdlib_io)


def _stdlib() -> set[str]:
    import sys

    return set(sys.stdlib_module_names)


def test_adapters_never_depend_on_the_composition_root() -> None:
    for name in GRAPH:
        if name.startswith("adapters.") and not name.startswith("adapters.server"):
            assert not any(m.startswith("adapters.server") for m in GRAPH[name]), name


def test_no_import_cycles() -> None:
    """Between modules (a package's ``__init__`` re-exporting its own modules is not a cycle
    of two modules and is left out)."""
    graph = {
        name: {
            m
            for m in deps
            if not (MODULES[m].name == "__init__.py" and name.startswith(m + "."))
            and not (MODULES[name].name == "__init__.py" and m.startswith(name + "."))
        }
        for name, deps in GRAPH.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError(" -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
