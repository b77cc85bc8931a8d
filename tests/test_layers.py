"""The package's layering (the table in farm/__init__.py), read from the imports themselves: a module
imports only its own package or lower layers, and no modules import each other in a circle."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

FARM = Path(__file__).resolve().parent.parent / "farm"

# The table of farm/__init__.py: top-level module or package of farm -> layer.
LAYERS = {
    "errors": 0, "_version": 0, "native": 0,
    "types": 1, "rig": 1,
    "storage": 2, "media": 2, "windows": 2,
    "pose": 3, "propose": 3,
    "config": 4, "character": 4, "qa": 4, "backends": 4,
    "stitch": 5, "manifest": 5, "report": 5, "provenance": 5,
    "shot": 6,
    "records": 7, "campaign": 7, "sweep": 7, "notify": 7, "library": 7,
    "runtime": 8,
    "api": 9,
    "cli": 10, "bench": 10,
}


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package at `root`."""
    found = {}
    for path in root.rglob("*.py"):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its body (imports inside functions
    count: they run too). `from pkg import name` is an import of pkg.name when that is a module."""
    known = modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package this module is in
                    package = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    base = ".".join([*package, *([node.module] if node.module else [])])
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in known else base)
        graph[name] = {_owner(t, known) for t in targets if t.split(".")[0] == root.name} - {name, None}
    return graph


def _owner(target: str, known: dict[str, Path]) -> str | None:
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def violations(root: Path, layers: dict[str, int]) -> list[str]:
    """Every import that goes up the table or sideways into another package of the same layer,
    every module not in the table, and every circle of imports."""
    found = []
    graph = imports(root)
    for module, targets in graph.items():
        parts = module.split(".")
        if len(parts) == 1:  # the package's __init__: the lazy public API, above everything
            continue
        top = parts[1]
        if top not in layers:
            found.append(f"{module}: not in the layer table")
            continue
        for target in sorted(targets):
            other = target.split(".")[1] if "." in target else None
            if other is None or other == top:
                continue
            if other not in layers:
                found.append(f"{module} imports {target}: not in the layer table")
            elif layers[other] >= layers[top]:
                found.append(f"{module} (layer {layers[top]}) imports {target} (layer {layers[other]})")
    found.extend(f"import circle: {' -> '.join(c)}" for c in circles(graph))
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_the_package_keeps_its_layers_and_has_no_import_circle():
    assert violations(FARM, LAYERS) == []


def test_the_table_here_is_the_table_in_the_package_docstring():
    import farm

    rows = {}
    for line in farm.__doc__.splitlines():
        row = re.match(r"(\d+)\s+(.+?)\s{2,}\S", line.strip())  # "4  config, character, qa, backends  the ..."
        if row:
            rows.update({name.strip(): int(row[1]) for name in row[2].split(",")})
    assert rows == LAYERS


def test_pose_stage_and_storage_rules_hold():
    graph = imports(FARM)

    def reach(prefix: str) -> set[str]:
        return {t for m, ts in graph.items() if m == prefix or m.startswith(prefix + ".") for t in ts}

    assert not {t for t in reach("farm.pose") if t.startswith("farm.backends")}
    assert not {t for t in reach("farm.shot") if t.startswith("farm.runtime")}
    assert reach("farm.storage") <= {"farm.errors"} | {m for m in graph if m.startswith("farm.storage")}


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "farm"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            (root / parent / "__init__.py").touch()
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"pose/retarget.py": "from farm.backends.base import Canvas\n", "backends/base.py": ""},
         "farm.pose.retarget (layer 3) imports farm.backends.base (layer 4)"),
        ({"shot/plan.py": "def f():\n    from farm.runtime import campaign\n", "runtime/campaign.py": ""},
         "farm.shot.plan (layer 6) imports farm.runtime.campaign (layer 8)"),
        ({"storage/store.py": "import farm.config\n", "config.py": ""},
         "farm.storage.store (layer 2) imports farm.config (layer 4)"),
        ({"storage/s3.py": "from farm.storage.store import X\n", "storage/store.py": "from farm.storage import s3\n"},
         "import circle: farm.storage.s3 -> farm.storage.store"),
        ({"newthing.py": ""}, "farm.newthing: not in the layer table"),
    ],
)
def test_the_checker_catches_a_wrong_import(tmp_path, files, expected):
    assert expected in violations(_package(tmp_path, files), LAYERS)
