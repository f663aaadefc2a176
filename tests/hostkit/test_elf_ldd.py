"""ELF parsing and library resolution, checked against the host's own `ldd`."""

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from hostkit.elf import read_dynamic_info
from hostkit.errors import ArtifactError
from hostkit.ldd import library_dirs, runtime_closure
from hostkit.rootfs_archive import RootfsArchive

PYTHON = "/usr/bin/python3.11"


def test_reads_interpreter_and_needed_libraries_of_an_executable() -> None:
    info = read_dynamic_info(Path(PYTHON).read_bytes())
    assert info.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert "libc.so.6" in info.needed


def test_a_shared_library_has_no_interpreter() -> None:
    info = read_dynamic_info(Path("/lib/x86_64-linux-gnu/libz.so.1").read_bytes())
    assert info.interpreter is None
    assert info.needed == ("libc.so.6",)


def test_rejects_what_is_not_elf() -> None:
    with pytest.raises(ValueError, match="not an ELF file"):
        read_dynamic_info(b"#!/bin/sh\n")


def _ldd(program: str) -> set[str]:
    """The paths the host's loader opens for `program`, as `ldd` lists them."""
    output = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    paths = {program}
    for line in output.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/"):
            paths.add(path)
    return paths


def _add_with_links(tar: tarfile.TarFile, path: str, added: set[str]) -> None:
    """Add `path` as the host has it: every component, and what each symlink points at."""
    parts = path.strip("/").split("/")
    current = ""
    for index, part in enumerate(parts):
        current += "/" + part
        if current not in added:
            tar.add(current, arcname=current, recursive=False)
            added.add(current)
        if os.path.islink(current):
            target = os.path.join(os.path.dirname(current), os.readlink(current))
            rest = parts[index + 1 :]
            _add_with_links(tar, os.path.normpath(os.path.join(target, *rest)), added)
            return


def _host_archive(paths: set[str]) -> RootfsArchive:
    buffer = io.BytesIO()
    added: set[str] = set()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(paths):
            _add_with_links(tar, path, added)
    buffer.seek(0)
    return RootfsArchive(tarfile.open(fileobj=buffer))


def test_closure_matches_the_hosts_ldd() -> None:
    opened = _ldd(PYTHON)
    conf = {"/etc/ld.so.conf", *(str(p) for p in Path("/etc/ld.so.conf.d").glob("*.conf"))}
    # The archive holds python3, what ldd names and the links between: the resolver must find
    # each library through the same search path and links as the loader.
    archive = _host_archive(opened | conf | {"/usr/bin/python3"})

    closure = runtime_closure(archive, ["/usr/bin/python3"])

    regular_files = {path for path in closure if archive.member(path).isfile()}
    assert regular_files == {os.path.realpath(path) for path in opened}
    # Crossed links come along, so the loader's own paths work in an image built from them.
    assert {"/usr/bin/python3", "/lib64", "/usr/lib64/ld-linux-x86-64.so.2"} <= closure
    assert "/lib/x86_64-linux-gnu" in library_dirs(archive)


def test_a_missing_library_names_who_needs_it() -> None:
    archive = _host_archive({PYTHON})
    with pytest.raises(ArtifactError, match=r"\.so\.\d, needed by /usr/bin/python3\.11, is in"):
        runtime_closure(archive, [PYTHON])


def _archive_of_links(
    dirs: tuple[str, ...], links: dict[str, str], files: tuple[str, ...]
) -> RootfsArchive:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in dirs:
            entry = tarfile.TarInfo(name)
            entry.type = tarfile.DIRTYPE
            tar.addfile(entry)
        for name in files:
            entry = tarfile.TarInfo(name)
            entry.size = len(name)
            tar.addfile(entry, io.BytesIO(name.encode()))
        for name, target in links.items():
            entry = tarfile.TarInfo(name)
            entry.type, entry.linkname = tarfile.SYMTYPE, target
            tar.addfile(entry)
    buffer.seek(0)
    return RootfsArchive(tarfile.open(fileobj=buffer))


def test_resolve_follows_links_inside_the_rootfs_only() -> None:
    archive = _archive_of_links(
        ("./usr", "./usr/lib", "./usr/etc"),
        {"./usr/lib64": "../usr/lib", "./etc": "/usr/etc", "./loop": "loop"},
        ("./usr/lib/ld.so", "./usr/etc/passwd"),
    )
    resolved = archive.resolve("/usr/lib64/ld.so")
    assert resolved.path == "/usr/lib/ld.so"
    assert resolved.symlinks == ("/usr/lib64",)
    # An absolute target starts from the rootfs's root, not the host's /etc.
    assert archive.read("/etc/passwd") == b"./usr/etc/passwd"
    assert not archive.exists("/etc/shadow")
    with pytest.raises(FileNotFoundError, match="too many levels"):
        archive.resolve("/loop")
