"""The layering of the project's packages, read from the source (every import statement,
those inside functions too, since a lazy import is still a dependency):

    swin_jax.cli  ->  train (the trainer, the benchmarks)  ->  swin_jax (the library)
                                                 swin_torch_ref  ->  swin_jax.configs

Nothing in the library reaches the trainer or the benchmarks but its command-line module, and
no module imports itself through others (no import circle)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("swin_jax", "swin_torch_ref", "train")
COMMAND_LINE = {"swin_jax.cli", "swin_jax.__main__"}  # the one place above both the library and the tools


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its source (not under `if TYPE_CHECKING`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:  # `from pkg import module`
                    found.add(f"{base}.{alias.name}")
                elif base in modules:
                    found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module `start` reaches, each with the module it was first reached from."""
    seen, todo = {start: ""}, [start]
    while todo:
        here = todo.pop()
        for there in sorted(graph[here]):
            if there not in seen:
                seen[there] = here
                todo.append(there)
    return seen


def chain(parents: dict[str, str], end: str) -> str:
    links = [end]
    while parents[links[-1]]:
        links.append(parents[links[-1]])
    return " -> ".join(reversed(links))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_graph_sees_lazy_imports():
    """The reader finds imports inside functions (a test that can fail: the CLI reaches the
    trainer only through them)."""
    graph = import_graph()
    assert "train.loop" in graph["swin_jax.cli"] and "train.bench" in graph["swin_jax.cli"]
    assert "swin_jax.kernels" in graph["swin_jax.layers"] and "swin_jax.configs.swin" in graph["swin_jax.configs.registry"]
    assert len(graph) > 50
    assert "swin_jax.configs" in graph["swin_torch_ref"] or any(m.startswith("swin_jax.configs")
                                                                 for m in graph["swin_torch_ref"])


def test_the_library_does_not_reach_the_trainer_or_the_benchmarks():
    graph = import_graph()
    problems = []
    for module in sorted(graph):
        if module.split(".")[0] != "swin_jax" or module in COMMAND_LINE:
            continue
        parents = reachable(graph, module)
        above = sorted(m for m in parents if m.split(".")[0] == "train" or m in COMMAND_LINE)
        if above:
            problems.append(chain(parents, above[0]))
    assert not problems, "the library imports its tools:\n" + "\n".join(problems)


def test_the_reference_models_import_no_trainer():
    graph = import_graph()
    for module in (m for m in graph if m.startswith("swin_torch_ref")):
        parents = reachable(graph, module)
        assert not [m for m in parents if m.split(".")[0] == "train" or m in COMMAND_LINE], chain(
            parents, next(m for m in parents if m.split(".")[0] == "train" or m in COMMAND_LINE))


def test_no_import_circle():
    found = cycles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)
