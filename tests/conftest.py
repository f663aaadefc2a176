"""Fixtures every test folder may use. Tests that need a Docker engine skip where none answers,
except under CI, where a missing engine is a set-up failure that must not pass silently."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from hostkit import disk_image
from tests.support.artifacts import refuse


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a Docker engine and none answers: {exc}")
        pytest.skip(f"no Docker engine answers ({exc}); start dockerd to run this test")
    yield client
    client.close()


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
