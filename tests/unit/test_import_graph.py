"""The layers of the code, checked from the source text (ast; nothing is imported or run).

    resonfl  (SDK + FL core)   <-   backend, workers (the server)   <-   launcher (up, worker, ...)

The server folders (backend/, workers/, launcher/) install under one distribution-qualified
name, `resonfl_server.<folder>` (setup.py), so installing ResonFL claims no generic top-level
name; code imports them only by that name.

An arrow may only point down this picture, and no two modules may reach each other through
their imports (a cycle), whether the import sits at module level or inside a function: a
function-level import still runs, only later.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER = ("backend", "workers", "launcher")  # folders installed as resonfl_server.<folder>
PACKAGES = ("resonfl", *SERVER)
Q = "resonfl_server."
# What each layer must never import (the layers above it).
FORBIDDEN = {
    "resonfl": (Q + "backend", Q + "workers", Q + "launcher"),
    Q + "backend": (Q + "launcher",),
    Q + "workers": (Q + "launcher",),
}
# The one arrow up the picture that is allowed: the `resonfl` command adds the launcher's
# subcommands, imported inside a function so the SDK never loads it on import.
LAZY_DISPATCH = {("resonfl.cli", "resonfl_server.launcher.commands")}


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str
    line: int
    in_function: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] in SERVER:
        parts.insert(0, "resonfl_server")
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[_module_name(path)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module of ours that `import name` loads last (its longest known prefix)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: dict[str, Path]) -> None:
        self.module, self.is_package, self.known = module, is_package, known
        self.depth = 0
        self.arrows: list[Arrow] = []

    def _add(self, name: str, line: int) -> None:
        target = _resolve(name, self.known)
        if target is not None and target != self.module:
            self.arrows.append(Arrow(self.module, target, line, self.depth > 0))

    def _scope(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _scope

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.module.split(".")
            if not self.is_package:
                package.pop()
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        for alias in node.names:
            # `from a.b import c` loads the module a.b.c when c is one, else a.b.
            self._add(f"{base}.{alias.name}", node.lineno)


def _arrows() -> Iterator[Arrow]:
    known = _modules()
    for module, path in known.items():
        collector = _Collector(module, path.name == "__init__.py", known)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        yield from collector.arrows


def _cycles(arrows: list[Arrow]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = {}
    for a in arrows:
        graph.setdefault(a.source, set()).add(a.target)
        graph.setdefault(a.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_walk_sees_the_known_arrows() -> None:
    """Guards the walker itself: arrows we know exist are found."""
    pairs = {(a.source, a.target) for a in _arrows()}
    assert ("resonfl_server.launcher.commands", "resonfl_server.workers.site.heartbeat") in pairs
    assert ("resonfl_server.workers.site.config", "resonfl_server.workers.settings") in pairs
    assert ("resonfl.cli", "resonfl_server.launcher.commands") in pairs


def _layer(module: str) -> str:
    """resonfl, or resonfl_server.<folder>."""
    return ".".join(module.split(".")[: 2 if module.startswith(Q) else 1])


def test_no_arrow_points_up_the_layers() -> None:
    wrong = []
    for a in _arrows():
        layer, upper = _layer(a.source), _layer(a.target)
        if upper not in FORBIDDEN.get(layer, ()):
            continue
        if (a.source, a.target) in LAZY_DISPATCH and a.in_function:
            continue
        wrong.append(f"{a.source}:{a.line} imports {a.target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_cycle() -> None:
    cycles = _cycles(list(_arrows()))
    assert not cycles, "modules that import each other:\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_server_calls_the_sdk_job_jobspec() -> None:
    """Two classes are named Job: the SDK's job folder (resonfl.job.Job) and the job store's
    row (resonfl_server.backend.models.Job). backend/, where both live, imports the first as JobSpec, so a
    reader always knows which one a name means."""
    bare = []
    for package in ("backend",):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module == "resonfl.job":
                    for alias in node.names:
                        if alias.name == "Job" and alias.asname != "JobSpec":
                            bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bare, "import resonfl.job.Job as JobSpec here:\n" + "\n".join(bare)


def test_server_folders_are_imported_only_by_their_qualified_name() -> None:
    """`import backend` works from a checkout's root by accident (the current folder is on
    sys.path) but not where ResonFL is installed: every import says resonfl_server.<folder>."""
    bare = []
    for path in [
        *ROOT.joinpath("tests").rglob("*.py"),
        *ROOT.joinpath("migrations").rglob("*.py"),
        *(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")),
    ]:
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else (
                    [node.module]
                    if isinstance(node, ast.ImportFrom) and node.module and not node.level
                    else []
                )
            )
            bare += [
                f"{path.relative_to(ROOT)}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] in SERVER
            ]
    assert not bare, "import these as resonfl_server.<...>:\n" + "\n".join(bare)
