"""The import contract of maas_lib, read from the source with `ast` (every import:
module level, inside functions, and under TYPE_CHECKING):

- layers, each importing only itself and the layers below it:
  front ends -> access control -> fleet -> scheduler, telemetry -> store, BMCs, planner,
  inventory -> models, errors and small leaf helpers;
- no import cycle between modules;
- an import inside a function (kept there for start-up time) says why in a comment on
  the line above it (or above the run of imports it starts) or on its own line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "maas_lib"

#: Top layer first. A module belongs to the longest prefix listed; a new top-level module
#: must be placed here (the test says so) rather than slip in anywhere.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "front ends",
        (
            "maas_lib",  # the Python API (lazy names)
            "maas_lib.__main__",
            "maas_lib.cli",
            "maas_lib.cli_render",
            "maas_lib.cli_access",  # tokens, pools grant/revoke/owners, audit
            "maas_lib.cli_service",  # serve, --api
            "maas_lib.service",  # the HTTPS API server, its client and web page
            "maas_lib.output",
            "maas_lib.api",
            "maas_lib.sim",  # the simulator: `maasctl sim`, it seeds a fleet through Fleet
        ),
    ),
    # Who may do what: the HTTP server (a front end) calls GuardedFleet, which calls Fleet.
    ("access control", ("maas_lib.access",)),
    ("fleet", ("maas_lib.fleet",)),
    ("scheduler and telemetry", ("maas_lib.scheduler", "maas_lib.telemetry")),
    (
        "store, BMCs, planner and inputs",
        (
            "maas_lib.store",
            "maas_lib.bmc",
            "maas_lib.planner",
            "maas_lib.inventory",
            "maas_lib.credentials",
            # API tokens' secrets and hashes, on the store (Fleet's token methods use it).
            "maas_lib.access.tokens",
        ),
    ),
    (
        "models, errors and leaf helpers",
        (
            "maas_lib.models",
            "maas_lib.enums",
            "maas_lib.errors",
            "maas_lib.classes",
            "maas_lib.telemetry.models",  # result models the store fills
            "maas_lib.access.models",  # tokens, grants, audit records: the store fills them
            "maas_lib.access.principal",  # who is calling: a plain dataclass
            "maas_lib.serialize",
            "maas_lib.timeutil",
            "maas_lib.patterns",
            "maas_lib.validation",
            "maas_lib.inventory_limits",
        ),
    ),
)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the maas_lib module imported (the longest that exists)
    line: int
    in_function: bool
    explained: bool  # a comment says why (only asked of imports in functions)


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _explained(lines: list[str], node: ast.stmt) -> bool:
    """A comment on the import's lines, or above it (over the run of imports it is in)."""
    if any("#" in lines[i - 1] for i in range(node.lineno, (node.end_lineno or node.lineno) + 1)):
        return True
    i = node.lineno - 1
    while i > 0:
        above = lines[i - 1].strip()
        if above.startswith("#"):
            return True
        # Still inside the run: another import (or its wrapped names), or the `if`/`else`
        # that chooses between imports.
        if not above or above.startswith(("from ", "import ", ")", "if ", "elif ", "else:")):
            i -= 1
            continue
        if above.endswith(",") or above.endswith("("):
            i -= 1
            continue
        return False
    return False


def _imports_of(module: str, path: Path) -> list[Import]:
    source = path.read_text()
    lines = source.splitlines()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    todo: list[tuple[ast.AST, bool]] = [(ast.parse(source), False)]
    while todo:
        node, in_function = todo.pop()
        for child in ast.iter_child_nodes(node):
            todo.append(
                (child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))
            )
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package[: len(package) - child.level + 1]
                    base = ".".join([*parts, *([child.module] if child.module else [])])
                names = [f"{base}.{a.name}" for a in child.names]
            else:
                continue
            explained = not in_function or _explained(lines, child)
            for name in names:
                target = _resolve(name) if name.split(".")[0] == "maas_lib" else None
                found.append(Import(module, target or name, child.lineno, in_function, explained))
    return found


def _imports() -> list[Import]:
    return [i for module, path in MODULES.items() for i in _imports_of(module, path)]


IMPORTS = _imports()


def _layer(module: str) -> int | None:
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "maas_lib" and module.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def _internal() -> list[Import]:
    return [i for i in IMPORTS if i.target in MODULES and i.target != i.module]


def test_every_module_has_a_layer():
    assert [m for m in sorted(MODULES) if _layer(m) is None] == []


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{i.module}:{i.line} imports {i.target} ({LAYERS[_layer(i.target)][0]}, above "
        f"{LAYERS[_layer(i.module)][0]})"
        for i in _internal()
        if _layer(i.target) < _layer(i.module)  # type: ignore[operator]
    ]
    assert upward == []


def test_nothing_imports_the_front_ends_outside_the_package():
    # The Ansible collection's plugins are front ends too: maas_lib never imports them.
    assert [
        f"{i.module}:{i.line}" for i in IMPORTS if i.target.startswith("ansible_collections")
    ] == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                connect(w)
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
            connect(v)
    return found


def test_no_import_cycle():
    edges: dict[str, set[str]] = {}
    for i in _internal():
        edges.setdefault(i.module, set()).add(i.target)
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_import_inside_a_function_says_why():
    unexplained = [f"{i.module}:{i.line} {i.target}" for i in IMPORTS if not i.explained]
    assert sorted(set(unexplained)) == []


def test_an_unexplained_import_is_found():
    lines = ["def f():", "    x = 1", "    import json", "    # why", "    import os"]
    tree = ast.parse("\n".join(lines))
    first, second = (n for n in ast.walk(tree) if isinstance(n, ast.Import))
    assert not _explained(lines, first)
    assert _explained(lines, second)
