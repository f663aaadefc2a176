"""Docker base images for the baselines, imported from Debian rootfs tarballs (no registry).

    debian-python   Debian bookworm minbase, python3-minimal and netbase, slimmed like debian:*-slim
    python-minimal  only the interpreter, the libraries it links and its standard library

Both are cut from one cached debootstrap rootfs. Each is tagged
unibench/<name>:<first 12 hex digits of its recipe hash> and built only when that tag is missing.
A fresh import is tagged only after a container from it has run Python, so a tag always names a
working image; a failed build leaves nothing tagged.
"""

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import docker
import docker.errors

from baselines import python_minimal
from hostkit import cache, debian_slim
from hostkit.debootstrap import PYTHON_ROOTFS, RootfsRecipe, ensure_rootfs
from hostkit.errors import ArtifactError

REPOSITORY_PREFIX = "unibench/"

ROOTFS = PYTHON_ROOTFS  # the unikernel's runtime is cut from the same rootfs

SMOKE_TEST = ("python3", "-I", "-c", 'import socket, sys, time, os; print("ok")')
SMOKE_TEST_TIMEOUT_S = 60


@dataclass(frozen=True)
class ImageRecipe:
    rootfs: RootfsRecipe
    write_tar: Callable[[Path, BinaryIO], None]  # (rootfs tarball, output) -> image tar stream
    code_version: int  # the RECIPE_VERSION of the module holding write_tar
    changes: tuple[str, ...]  # Dockerfile instructions applied by `docker import --change`


IMAGES = {
    "debian-python": ImageRecipe(
        rootfs=ROOTFS,
        write_tar=debian_slim.write_debian_slim,
        code_version=debian_slim.RECIPE_VERSION,
        changes=(
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            'CMD ["python3"]',
        ),
    ),
    "python-minimal": ImageRecipe(
        rootfs=ROOTFS,
        write_tar=python_minimal.write_python_minimal,
        code_version=python_minimal.RECIPE_VERSION,
        # No LANG: without locale files Python 3.11 falls back to its UTF-8 mode by itself.
        changes=("ENV PATH=/usr/bin", 'CMD ["python3"]'),
    ),
}
IMAGE_NAMES = tuple(IMAGES)


def recipe_hash(name: str) -> str:
    """A hex digest of everything that makes image `name`: its rootfs, code and import changes."""
    recipe = _recipe(name)
    inputs = {
        "image": name,
        "rootfs": recipe.rootfs.recipe_hash(),
        "code": recipe.code_version,
        "changes": recipe.changes,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def image_tag(name: str) -> str:
    """The tag image `name` has in the engine once built, e.g. unibench/python-minimal:0123abcd."""
    return f"{REPOSITORY_PREFIX}{name}:{recipe_hash(name)[:12]}"


def ensure_image(
    client: docker.DockerClient, name: str, log: Callable[[str], None] | None = None
) -> str:
    """Return the tag of image `name`, building the rootfs and importing it first if missing."""
    tag = image_tag(name)
    if _has_image(client, tag):
        return tag
    say = log or (lambda _message: None)
    recipe = _recipe(name)
    started = time.monotonic()
    rootfs = ensure_rootfs(recipe.rootfs, say)
    say(f"rootfs {rootfs} ready after {time.monotonic() - started:.1f} s")
    # Serialise imports of one image across processes; a racing import would only waste time.
    with cache.locked(cache.directory("images") / f"{name}.lock"):
        if not _has_image(client, tag):
            started = time.monotonic()
            _build(client, recipe, rootfs, tag)
            say(f"{tag} imported and checked in {time.monotonic() - started:.1f} s")
    return tag


def image_size(
    client: docker.DockerClient, name: str, log: Callable[[str], None] | None = None
) -> int:
    """The size in bytes the engine reports for image `name` (built first if missing)."""
    return int(client.images.get(ensure_image(client, name, log)).attrs["Size"])


def _recipe(name: str) -> ImageRecipe:
    try:
        return IMAGES[name]
    except KeyError:
        raise ArtifactError(
            f"no baseline image {name!r}; known images: {', '.join(IMAGE_NAMES)}"
        ) from None


def _has_image(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def _build(client: docker.DockerClient, recipe: ImageRecipe, rootfs: Path, tag: str) -> None:
    # An anonymous temporary file vanishes even if we are killed while writing it.
    with tempfile.TemporaryFile(dir=cache.directory("images")) as stream:
        recipe.write_tar(rootfs, stream)
        stream.seek(0)
        image_id = _import(client, stream, recipe.changes, tag)
    try:
        _smoke_test(client, image_id, tag)
    except BaseException:
        client.images.remove(image_id, force=True)
        raise
    repository, _, version = tag.rpartition(":")
    client.api.tag(image_id, repository, version)


def _import(
    client: docker.DockerClient, stream: BinaryIO, changes: tuple[str, ...], tag: str
) -> str:
    """Import an image tar stream untagged; return the new image's id."""
    try:
        answer: str = client.api.import_image_from_data(stream, changes=list(changes))
    except docker.errors.APIError as error:
        raise ArtifactError(f"docker import for {tag} failed: {error.explanation}") from error
    # The engine answers one JSON object per line; the last has the new image's id as status.
    status = json.loads(answer.splitlines()[-1])
    image_id = status.get("status", "")
    if not isinstance(image_id, str) or not image_id.startswith("sha256:"):
        raise ArtifactError(f"docker import for {tag} failed: the engine answered {answer!r}")
    return image_id


def _smoke_test(client: docker.DockerClient, image_id: str, tag: str) -> None:
    """Run Python in a container from the new image; raise ArtifactError if it does not work."""
    # create/start/remove rather than run(remove=True), which leaves the container behind when
    # it cannot even start (no python3 in the image).
    container = client.containers.create(image_id, list(SMOKE_TEST), network_mode="none")
    try:
        container.start()
        status = container.wait(timeout=SMOKE_TEST_TIMEOUT_S)["StatusCode"]
        output = container.logs(stdout=True, stderr=True)
    except docker.errors.APIError as error:
        raise ArtifactError(
            f"the image built for {tag} cannot start Python ({error}); it was removed, "
            "nothing was tagged"
        ) from error
    finally:
        container.remove(force=True)
    if status != 0 or output != b"ok\n":
        raise ArtifactError(
            f"the image built for {tag} printed {output!r} (exit status {status}) instead of "
            "'ok'; it was removed, nothing was tagged"
        )
