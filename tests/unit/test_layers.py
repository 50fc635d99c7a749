"""The import graph keeps the data flow's direction: layer rules and no cycles, read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.harness import REPO

PACKAGES = ("serving", "pipeline")
# serving's rooms below the HTTP one: the offline batch command and the build use them without HTTP.
BELOW_HTTP = (
    "serving.atomic_files",
    "serving.backends",
    "serving.batch",
    "serving.bundle",
    "serving.errors",
    "serving.imaging",
    "serving.loading",
    "serving.logs",
    "serving.manifest",
    "serving.params",
    "serving.removebg_params",
    "serving.settings",
    "serving.store",
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = REPO) -> dict[str, Path]:
    return {module_name(path, root): path for package in PACKAGES for path in (root / package).rglob("*.py")}


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports anywhere in it (function-level imports too), by name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if submodule in known else node.module)
    found = set()
    for name in names:
        while name and name not in known:  # a name inside a module: the module
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def graph(root: Path = REPO) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imported(path, known) - {name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other, directly or around a loop."""
    import networkx

    import_graph = networkx.DiGraph([(source, target) for source, targets in edges.items() for target in targets])
    return sorted(sorted(group) for group in networkx.strongly_connected_components(import_graph) if len(group) > 1)


def within(name: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def offences(edges: dict[str, set[str]], importer: tuple[str, ...] | str, imported_: str) -> list[str]:
    return sorted(
        f"{source} imports {target}"
        for source, targets in edges.items()
        if within(source, importer)
        for target in targets
        if within(target, imported_)
    )


GRAPH = graph()


def test_serving_never_imports_pipeline():
    assert offences(GRAPH, "serving", "pipeline") == []


def test_no_room_below_http_imports_it():
    assert offences(GRAPH, BELOW_HTTP, "serving.http") == []


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_the_rules_catch_a_planted_cycle_and_an_upward_import(tmp_path):
    for name, text in {
        "serving/__init__.py": "",
        "serving/http/__init__.py": "",
        "serving/http/params.py": "",
        "serving/imaging/__init__.py": "",
        "serving/imaging/cutout.py": "from serving.http.params import CutoutParams\n",
        "serving/imaging/png.py": "def f():\n    from serving.imaging import cutout\n",
        "pipeline/__init__.py": "",
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "serving/http/params.py").write_text("import serving.imaging.png\n")
    planted = graph(tmp_path)
    assert offences(planted, BELOW_HTTP, "serving.http") == ["serving.imaging.cutout imports serving.http.params"]
    assert cycles(planted) == [["serving.http.params", "serving.imaging.cutout", "serving.imaging.png"]]


@pytest.mark.parametrize("room", BELOW_HTTP)
def test_every_room_named_in_the_rules_exists(room):
    assert room in GRAPH, f"{room} is not a module or package of serving: the rule guards nothing"
