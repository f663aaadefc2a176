"""Failure paths of the rootfs build: they must explain themselves and leave nothing behind."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hostkit.debootstrap import RootfsRecipe, _remove_tree, ensure_rootfs
from hostkit.errors import ArtifactError

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and mounts need root")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("UNIBENCH_CACHE", str(tmp_path))
    return tmp_path


@pytest.mark.slow
@needs_root
@pytest.mark.skipif(shutil.which("debootstrap") is None, reason="debootstrap is not installed")
def test_failed_debootstrap_explains_and_leaves_no_files(cache: Path) -> None:
    recipe = RootfsRecipe("bookworm", "minbase", ("unibench-no-such-package",))
    with pytest.raises(ArtifactError) as raised:
        ensure_rootfs(recipe)
    assert "Couldn't find these debs: unibench-no-such-package" in str(raised.value)
    # Only the lock file remains: no half tarball, no debootstrap directory.
    assert [p.name for p in (cache / "rootfs").iterdir()] == [f"{recipe.recipe_hash()}.lock"]


@needs_root
def test_build_directory_is_removed_even_with_a_leftover_mount(tmp_path: Path) -> None:
    # A debootstrap killed mid-way leaves /proc mounted in its target; removing the tree must
    # detach it rather than recurse into it.
    proc = tmp_path / "build" / "rootfs" / "proc"
    proc.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "unibench-test", str(proc)], check=True)
    (proc / "file").write_text("inside the mount")

    _remove_tree(tmp_path / "build")

    assert not (tmp_path / "build").exists()
    with open("/proc/self/mountinfo") as mountinfo:
        assert str(proc) not in mountinfo.read()
