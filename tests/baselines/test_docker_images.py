"""Both base images built (or reused from the cache) for real, and run."""

import dataclasses
import os
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import docker
import docker.errors
import pytest

from baselines.docker_images import (
    IMAGE_NAMES,
    IMAGES,
    ROOTFS,
    ensure_image,
    image_size,
    image_tag,
)
from hostkit.debootstrap import rootfs_path
from hostkit.errors import ArtifactError

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ONE_LINER = ["python3", "-I", "-c", 'import socket, sys, time, os; print("ok")']


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        pytest.skip(f"no Docker engine answers ({error}); start dockerd to run these tests")
    if os.geteuid() != 0 and not rootfs_path(ROOTFS).exists():
        pytest.skip(f"{rootfs_path(ROOTFS)} is not cached and debootstrap needs root")
    yield client
    client.close()


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_image_runs_python(client: docker.DockerClient, name: str) -> None:
    tag = ensure_image(client, name, log=print)
    assert tag == image_tag(name)
    output = client.containers.run(tag, ONE_LINER, remove=True, network_mode="none")
    assert output == b"ok\n"


def test_a_present_image_is_reused(client: docker.DockerClient) -> None:
    first = client.images.get(ensure_image(client, "python-minimal")).id
    assert client.images.get(ensure_image(client, "python-minimal")).id == first


def test_minimal_image_has_no_shell(client: docker.DockerClient) -> None:
    container = client.containers.create(
        ensure_image(client, "python-minimal"), ["/bin/sh", "-c", "true"], network_mode="none"
    )
    try:
        with pytest.raises(docker.errors.APIError, match="/bin/sh"):  # nothing to exec
            container.start()
    finally:
        container.remove(force=True)


def test_minimal_image_is_much_smaller(client: docker.DockerClient) -> None:
    minimal = image_size(client, "python-minimal")
    debian = image_size(client, "debian-python")
    assert 0 < minimal * 3 < debian, (minimal, debian)


def _variant(
    monkeypatch: pytest.MonkeyPatch,
    label: str,
    write_tar: Callable[[Path, BinaryIO], None] | None = None,
) -> None:
    """Swap python-minimal's recipe for a variant with its own tag, labelled for clean-up."""
    recipe = IMAGES["python-minimal"]
    variant = dataclasses.replace(
        recipe,
        write_tar=write_tar or recipe.write_tar,
        changes=(*recipe.changes, f"LABEL unibench.test={label}"),
    )
    monkeypatch.setitem(IMAGES, "python-minimal", variant)


def test_a_fresh_build_is_tagged_once_it_runs(
    client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _variant(monkeypatch, uuid.uuid4().hex)
    tag = image_tag("python-minimal")
    try:
        assert ensure_image(client, "python-minimal") == tag
        image = client.images.get(tag)
        assert image.attrs["Config"]["Cmd"] == ["python3"]
    finally:
        client.images.remove(tag, force=True)


def _write_broken_image(rootfs: Path, out: BinaryIO) -> None:
    with tarfile.open(fileobj=out, mode="w") as tar:
        entry = tarfile.TarInfo("tmp")
        entry.type, entry.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(entry)


def test_a_broken_build_leaves_nothing_behind(
    client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    label = uuid.uuid4().hex
    _variant(monkeypatch, label, write_tar=_write_broken_image)
    with pytest.raises(ArtifactError, match="cannot start Python"):
        ensure_image(client, "python-minimal")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(image_tag("python-minimal"))
    assert client.images.list(all=True, filters={"label": f"unibench.test={label}"}) == []
    assert client.containers.list(all=True, filters={"label": f"unibench.test={label}"}) == []
