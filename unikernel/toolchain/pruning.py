"""Import-graph pruning: the image keeps only the modules the application can import.

The walk is the standard library's modulefinder, started from the boot module, the
application's main module and what Python imports by itself at start-up. In our code (the library
OS and the application) it follows every import statement, those inside functions included. In
the standard library it follows only what runs at import time: the standard library imports
lazily, inside functions, what only some callers need (os.popen's subprocess, for one), and
following those would keep most of the library. A lazy import the application does need is
named in its App's `extra_modules`. Nowhere does it follow an `if __name__ == "__main__":`
block (heapq's would keep doctest, and doctest half the library) or an `if TYPE_CHECKING:`
one. Modules compiled into Debian's interpreter need no file; the walk asks the image's own
interpreter which those are, since the build host's Python may build them otherwise.
"""

from __future__ import annotations

import ast
import modulefinder
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What CPython imports before running any code of ours, with -I -S and no locale in the image.
STARTUP_MODULES = (
    "encodings",
    "encodings.aliases",
    "encodings.utf_8",
    "encodings.ascii",
    "encodings.latin_1",
    "codecs",
    "io",
    "abc",
    "os",
    "stat",
    "posixpath",
    "genericpath",
    "_collections_abc",
    "_sitebuiltins",
)

# Imported only on platforms that are not ours, or by optional tooling never used in an image.
NEVER_IN_IMAGE = (
    "nt",
    "ntpath",
    "msvcrt",
    "_winapi",
    "winreg",
    "_overlapped",
    "_scproxy",
    "java",
    "org",
    "vms_lib",
    "_frozen_importlib",
    "_frozen_importlib_external",
)


@dataclass(frozen=True)
class Module:
    name: str
    file: Path | None  # None for builtin modules
    is_package: bool
    is_extension: bool


@dataclass(frozen=True)
class ImportGraph:
    modules: dict[str, Module]
    missing: tuple[str, ...]  # imported somewhere, found nowhere: fine if on a path never taken

    def python_modules(self) -> list[Module]:
        return [m for m in self.modules.values() if m.file is not None and not m.is_extension]

    def extensions(self) -> list[Module]:
        return [m for m in self.modules.values() if m.is_extension]


class _ImageModuleFinder(modulefinder.ModuleFinder):
    """ModuleFinder, told which modules the image's interpreter has built in."""

    def __init__(
        self,
        path: list[str],
        builtins: frozenset[str],
        excludes: Sequence[str],
        eager_roots: Sequence[Path],
    ):
        super().__init__(path=path, excludes=list(excludes))
        self._builtins = builtins
        self._eager_roots = eager_roots

    def scan_code(self, co: Any, m: Any) -> None:
        # co_name is "<module>" for the code run at import; functions carry their own names.
        if co.co_name != "<module>" and not self._follows_all_imports(m):
            return
        super().scan_code(co, m)

    def load_module(self, fqname: str, fp: Any, pathname: str, file_info: Any) -> Any:
        if file_info[2] != modulefinder._PY_SOURCE:  # type: ignore[attr-defined]
            return super().load_module(fqname, fp, pathname, file_info)
        tree = ast.parse(fp.read(), pathname)
        tree.body = _import_time_body(tree.body)
        module: Any = self.add_module(fqname)
        module.__file__ = pathname
        module.__code__ = compile(tree, pathname, "exec")
        self.scan_code(module.__code__, module)
        return module

    def _follows_all_imports(self, module_or_path: Any) -> bool:
        where = module_or_path if isinstance(module_or_path, str) else module_or_path.__file__
        return where is not None and any(Path(where).is_relative_to(r) for r in self._eager_roots)


def _import_time_body(body: list[ast.stmt]) -> list[ast.stmt]:
    """A module's top level without what never runs when it is imported: the body of
    `if __name__ == "__main__":` and of `if TYPE_CHECKING:` (whose `else:` does run)."""
    kept: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            kept.extend(node.orelse)
        elif not (isinstance(node, ast.If) and _is_main_test(node.test) and not node.orelse):
            kept.append(node)
    return kept


def _is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def _is_main_test(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def walk_imports(
    roots: Iterable[str],
    search_path: Sequence[Path],
    builtins: frozenset[str],
    our_code: Sequence[Path],
    excludes: Sequence[str] = NEVER_IN_IMAGE,
) -> ImportGraph:
    """Every module reachable from `roots` along `search_path` (first match wins, as in the
    image, where the same paths come in the same order). Modules under `our_code` have all
    their imports followed; the others only those run at import time."""
    finder = _ImageModuleFinder([str(p) for p in search_path], builtins, excludes, our_code)
    for root in [*STARTUP_MODULES, *roots]:
        finder.import_hook(root)
    modules: dict[str, Module] = {}
    found: Any
    for name, found in finder.modules.items():
        file = Path(found.__file__) if found.__file__ else None
        modules[name] = Module(
            name=name,
            file=file,
            is_package=found.__path__ is not None,
            is_extension=file is not None and file.suffix == ".so",
        )
    missing, _maybe = finder.any_missing_maybe()
    return ImportGraph(modules=modules, missing=tuple(sorted(missing)))


def stdlib_modules(stdlib: Path) -> dict[str, Path]:
    """Every module of the standard library folder, by name: what pruning can drop."""
    found: dict[str, Path] = {}
    for path in stdlib.rglob("*.py"):
        relative = path.relative_to(stdlib)
        if relative.parts[0] in ("site-packages", "dist-packages") or "test" in relative.parts:
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts:
            found[".".join(parts)] = path
    for path in (stdlib / "lib-dynload").glob("*.so"):
        found[path.name.split(".", 1)[0]] = path
    return found
