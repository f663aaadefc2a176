"""The image's code archive: every kept module compiled to bytecode, in one uncompressed zip.

The zip goes where CPython looks by default, <prefix>/lib/python311.zip, ahead of the standard
library folder, so the image needs no sys.path set-up. Entries are sourceless .pyc files, and
stored, not deflated: zipimport then reads them with no decompression at boot.
"""

from __future__ import annotations

import importlib.util
import io
import marshal
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: the archive is reproducible


@dataclass(frozen=True)
class SourceModule:
    name: str
    source: bytes
    is_package: bool

    @property
    def member(self) -> str:
        path = self.name.replace(".", "/")
        return f"{path}/__init__.pyc" if self.is_package else f"{path}.pyc"


def compile_pyc(module: SourceModule) -> bytes:
    """The .pyc bytes of a module: PEP 552's header (magic, flags 0: timestamp-based, mtime and
    size 0, never checked for a sourceless file) and the marshalled code object."""
    code = compile(module.source, f"<image>/{module.member[:-1]}", "exec", dont_inherit=True)
    header = importlib.util.MAGIC_NUMBER + bytes(12)
    return header + marshal.dumps(code)


@dataclass(frozen=True)
class ArchiveReport:
    data: bytes
    sizes: dict[str, int]  # module name -> bytes of its .pyc


def build_archive(modules: Iterable[SourceModule]) -> ArchiveReport:
    buffer = io.BytesIO()
    sizes: dict[str, int] = {}
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for module in sorted(modules, key=lambda m: m.name):
            pyc = compile_pyc(module)
            info = zipfile.ZipInfo(module.member, date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, pyc)
            sizes[module.name] = len(pyc)
    return ArchiveReport(data=buffer.getvalue(), sizes=sizes)
