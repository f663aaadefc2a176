"""The top-level packages form layers: each imports only the ones below it, never in a cycle.

harness    -> baselines, unikernel, workloads, hostkit
baselines  -> workloads, hostkit
workloads  -> unikernel
unikernel  -> hostkit (its toolchain only; image code imports nothing outside unikernel)
hostkit    -> nothing of ours
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "baselines", "workloads", "unikernel", "hostkit")
ALLOWED = {
    "harness": {"baselines", "unikernel", "workloads", "hostkit"},
    "baselines": {"workloads", "hostkit"},
    "workloads": {"unikernel"},
    "unikernel": {"hostkit"},
    "hostkit": set(),
}


def imported_packages(path: Path) -> set[str]:
    """The top-level packages of ours a module imports, wherever in the module it does."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names if name.split(".")[0] in PACKAGES)
    return found


def package_imports() -> dict[str, dict[str, set[Path]]]:
    """package -> imported package -> the files that import it."""
    edges: dict[str, dict[str, set[Path]]] = {package: {} for package in PACKAGES}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "_build" in path.parts:
                continue
            for other in imported_packages(path) - {package}:
                edges[package].setdefault(other, set()).add(path.relative_to(ROOT))
    return edges


def test_the_top_level_packages_import_no_cycle() -> None:
    edges = package_imports()
    sorter = graphlib.TopologicalSorter({p: set(imports) for p, imports in edges.items()})
    order = list(sorter.static_order())  # raises graphlib.CycleError on a cycle
    assert order[0] == "hostkit"
    assert order[-1] == "harness"


def test_each_package_imports_only_the_layers_below_it() -> None:
    wrong = {
        f"{package} -> {other}: {sorted(map(str, files))}"
        for package, imports in package_imports().items()
        for other, files in imports.items()
        if other not in ALLOWED[package]
    }
    assert not wrong, "\n".join(sorted(wrong))


def test_the_image_code_imports_nothing_outside_the_unikernel() -> None:
    """What the build may put into an image: every unikernel module but the toolchain."""
    image_code = [
        path
        for path in (ROOT / "unikernel").rglob("*.py")
        if "toolchain" not in path.relative_to(ROOT / "unikernel").parts
    ]
    assert image_code
    leaking = {
        str(path.relative_to(ROOT)): imported - {"unikernel"}
        for path in image_code
        if (imported := imported_packages(path)) - {"unikernel"}
    }
    assert not leaking
