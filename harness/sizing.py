"""What images weigh: the bytes of files and streams as stored and once compressed (zlib, level
9, the same for every target so that compressed sizes compare), what a native Python needs on
disk, and lines of code."""

from __future__ import annotations

import re
import subprocess
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

CHUNK = 1 << 20


def zlib_size(chunks: Iterable[bytes]) -> int:
    """The bytes of the chunks once compressed as one zlib stream, never held whole."""
    compressor = zlib.compressobj(9)
    return sum(len(compressor.compress(chunk)) for chunk in chunks) + len(compressor.flush())


def file_chunks(paths: Iterable[Path]) -> Iterable[bytes]:
    for path in paths:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk


def files_size(paths: Sequence[Path]) -> tuple[int, int]:
    """The files' bytes, and the bytes of all of them compressed as one stream."""
    return sum(p.stat().st_size for p in paths), zlib_size(file_chunks(paths))


def code_lines(paths: Iterable[Path]) -> int:
    """Lines that are neither blank nor only a comment (docstrings count as code)."""
    count = 0
    for path in paths:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                count += 1
    return count


def native_python_files(python: Path) -> list[Path]:
    """What a Linux process running this workload needs on disk: the interpreter, its standard
    library (the files Debian's runtime packages install under /usr/lib/python3.X, and the
    bytecode their installation compiles beside them), and the shared libraries the interpreter
    and the standard library's extension modules link, with the dynamic loader. Not counted: the
    packages' documentation, -dev headers and static library, nor the kernel and the rest of the
    host's system. Each file once, by its real path."""
    version = re.fullmatch(r"python(\d+\.\d+)", python.name)
    if version is None:
        raise RuntimeError(f"{python} is not a versioned CPython such as python3.11")
    v = version.group(1)
    stdlib = Path(f"/usr/lib/python{v}")
    listed = subprocess.run(
        ["dpkg", "-L", f"python{v}-minimal", f"libpython{v}-minimal", f"libpython{v}-stdlib"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    owned = [Path(p) for p in listed if Path(p).is_relative_to(stdlib)]
    sources = [p for p in owned if p.is_file() and not p.is_symlink()]
    compiled = [
        pyc
        for source in sources
        if source.suffix == ".py"
        for pyc in (source.parent / "__pycache__").glob(f"{source.stem}.cpython-*.pyc")
    ]
    programs = [python, *(p for p in sources if p.suffix == ".so")]
    files = {python, *sources, *compiled, *shared_libraries(programs)}
    return sorted({p.resolve() for p in files})


def shared_libraries(programs: Sequence[Path]) -> set[Path]:
    """What `ldd` says the programs load: their libraries and the dynamic loader."""
    found: set[Path] = set()
    for program in programs:
        listed = subprocess.run(
            ["ldd", str(program)], capture_output=True, text=True, check=True
        ).stdout
        found.update(Path(p) for p in re.findall(r"(/\S+) \(0x[0-9a-f]+\)", listed))
    return found
