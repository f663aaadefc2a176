"""What each image's tar holds, cut from the real cached rootfs (no Docker needed)."""

import os
import tarfile
import tempfile
from pathlib import Path

import pytest

from baselines.docker_images import ROOTFS
from baselines.python_minimal import select_paths
from hostkit.debian_slim import DPKG_CONFIG, is_dropped, write_debian_slim
from hostkit.debootstrap import ensure_rootfs, rootfs_path
from hostkit.rootfs_archive import RootfsArchive, member_path


def test_slim_rules_drop_docs_but_keep_copyright() -> None:
    assert is_dropped("/usr/share/man/man1/bash.1.gz")
    assert is_dropped("/usr/share/doc/bash/README.gz")
    assert is_dropped("/usr/share/locale/de/LC_MESSAGES/dpkg.mo")
    assert not is_dropped("/usr/share/doc/bash/copyright")
    assert not is_dropped("/usr/share/zoneinfo/UTC")
    assert not is_dropped("/usr/share/doc")


@pytest.fixture(scope="module")
def rootfs() -> Path:
    if os.geteuid() != 0 and not rootfs_path(ROOTFS).exists():
        pytest.skip(f"{rootfs_path(ROOTFS)} is not cached and debootstrap needs root")
    return ensure_rootfs(ROOTFS, log=print)


@pytest.mark.slow
def test_debian_python_is_slimmed(rootfs: Path) -> None:
    with tempfile.TemporaryFile() as stream:
        write_debian_slim(rootfs, stream)
        stream.seek(0)
        with tarfile.open(fileobj=stream) as tar:
            paths = {member_path(name) for name in tar.getnames()}
            config = tar.extractfile(DPKG_CONFIG.lstrip("/"))
            assert config is not None
            assert b"path-exclude=/usr/share/man/*" in config.read()
    assert not any(p.startswith("/usr/share/man/") for p in paths)
    assert {"/usr/share/doc/bash", "/usr/share/doc/bash/copyright"} <= paths
    assert {"/bin", "/usr/bin/bash", "/usr/bin/apt-get", "/usr/bin/python3.11"} <= paths


@pytest.mark.slow
def test_python_minimal_holds_python_and_nothing_else(rootfs: Path) -> None:
    with tarfile.open(rootfs) as tar:
        paths = select_paths(RootfsArchive(tar))
    assert {
        "/usr/bin/python3",
        "/usr/bin/python3.11",
        "/lib64",  # the loader's path crosses these links
        "/usr/lib64/ld-linux-x86-64.so.2",
        "/lib",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/python3.11/socket.py",
        "/etc/python3.11/sitecustomize.py",  # the stdlib's link points there
        "/etc/passwd",
        "/tmp",
    } <= paths
    assert not {"/bin", "/usr/bin/bash", "/usr/bin/dash", "/usr/bin/apt-get"} & paths
    assert sorted(p.split("/")[1] for p in paths if p.count("/") == 1) == [
        "etc",
        "lib",
        "lib64",
        "root",
        "tmp",
        "usr",
    ]
