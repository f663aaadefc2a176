"""Fixtures the image recipes' unit tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from baselines import disk_image


def refuse(*_args: object) -> None:
    pytest.fail("a unit test started a build")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache directory of the test's own."""
    root = tmp_path / "cache"
    monkeypatch.setenv("UNIBENCH_CACHE", str(root))
    return root


@pytest.fixture
def refuse_builds(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Any debootstrap fails the test; patch a recipe's own _build on what this returns."""

    monkeypatch.setattr(disk_image, "ensure_rootfs", refuse)
    return monkeypatch
