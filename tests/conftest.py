"""Shared fixtures. Tests that need a Docker engine skip where none answers, except under CI,
where a missing engine is a set-up failure that must not pass silently."""

from __future__ import annotations

import os
from collections.abc import Iterator

import docker
import pytest


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
