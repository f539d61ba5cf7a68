"""The import contract: layers only import downward, and no module import circle exists.

:data:`LAYERS` is the one declaration of the layer order (docs/architecture.md shows it and a test
below keeps the two equal). Every import counts, function-local ones included: a lazy import that
runs back up a layer is still a dependency on the layer above.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "magphase"

#: Top to bottom. A module may import from its own layer and from any layer below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),
    ("cli",),
    ("run",),
    ("stages",),
    ("report",),
    ("rundir",),
    ("evaluation",),
    ("training",),
    ("generative",),
    ("models",),
    ("data",),
    ("simulate",),
    ("io",),
    ("viz",),
    ("mri",),
    ("config",),
    ("conventions", "errors", "utils", "__init__"),
)
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports() -> list[tuple[str, str, str]]:
    """``(importer, imported, "file:line")`` for every import of a magphase module in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # `from magphase.stages import sample` imports the module magphase.stages.sample
                targets = [
                    f"{stem}.{a.name}"
                    if (PACKAGE.parent / f"{stem}.{a.name}".replace(".", "/")).exists()
                    or (PACKAGE.parent / (f"{stem}.{a.name}".replace(".", "/") + ".py")).exists()
                    else stem
                    for a in node.names
                ]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
            found += [(module, t, where) for t in targets if t == "magphase" or t.startswith("magphase.")]
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_package_has_a_layer():
    packages = {_layer(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert packages <= set(RANK), f"packages without a layer in LAYERS: {sorted(packages - set(RANK))}"


def test_no_import_runs_back_up_a_layer():
    upward = [
        f"{where}: {a} imports {b} ({_layer(a)} is below {_layer(b)})"
        for a, b, where in _imports()
        if RANK[_layer(b)] < RANK[_layer(a)]
    ]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_import_circle():
    graph: dict[str, set[str]] = defaultdict(set)
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    for a, b, _ in _imports():
        # `import magphase.x.y` also runs magphase.x's __init__; the edge goes to the deepest known module
        while b not in modules and "." in b:
            b = b.rpartition(".")[0]
        if a != b:
            graph[a].add(b)
    # Tarjan's strongly connected components.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

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
                circles.append(sorted(component))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_architecture_doc_shows_the_declared_layers():
    doc = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layers -->\n```\n(.*?)```", doc, flags=re.S)
    assert block, "docs/architecture.md needs the layer list between <!-- layers --> and a code block"
    listed = [line.split()[0].rstrip("/") for line in block.group(1).splitlines() if line[:1].strip()]
    expected = [name for layer in LAYERS for name in layer if name not in ("__main__", "__init__")]
    expected = [n for n in expected if n not in ("conventions", "errors", "utils")] + ["ground"]
    assert listed == expected, (listed, expected)
