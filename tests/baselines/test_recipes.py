import dataclasses
import re

import pytest

from baselines.docker_images import IMAGE_NAMES, IMAGES, image_tag, recipe_hash
from hostkit import debootstrap
from hostkit.debootstrap import RootfsRecipe
from hostkit.errors import ArtifactError

RECIPE = RootfsRecipe(suite="bookworm", variant="minbase", packages=("python3-minimal", "netbase"))


def test_rootfs_hash_is_stable_and_ignores_package_order() -> None:
    same = RootfsRecipe("bookworm", "minbase", ("netbase", "python3-minimal"))
    assert RECIPE.recipe_hash() == same.recipe_hash()
    assert re.fullmatch(r"[0-9a-f]{64}", RECIPE.recipe_hash())


@pytest.mark.parametrize(
    "changed",
    [
        dataclasses.replace(RECIPE, packages=("python3-minimal",)),
        dataclasses.replace(RECIPE, packages=(*RECIPE.packages, "ca-certificates")),
        dataclasses.replace(RECIPE, suite="trixie"),
        dataclasses.replace(RECIPE, variant="buildd"),
    ],
)
def test_rootfs_hash_changes_with_the_recipe(changed: RootfsRecipe) -> None:
    assert changed.recipe_hash() != RECIPE.recipe_hash()


def test_rootfs_hash_changes_with_the_code_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = RECIPE.recipe_hash()
    monkeypatch.setattr(debootstrap, "ROOTFS_CODE_VERSION", debootstrap.ROOTFS_CODE_VERSION + 1)
    assert RECIPE.recipe_hash() != before


def test_image_hashes_are_stable_and_distinct() -> None:
    hashes = {name: recipe_hash(name) for name in IMAGE_NAMES}
    assert hashes == {name: recipe_hash(name) for name in IMAGE_NAMES}
    assert len(set(hashes.values())) == len(IMAGE_NAMES)
    assert set(IMAGE_NAMES) == {"debian-python", "python-minimal"}


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_image_hash_follows_its_rootfs_code_and_changes(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = IMAGES[name]
    before = recipe_hash(name)
    variants = [
        dataclasses.replace(recipe, rootfs=dataclasses.replace(RECIPE, packages=("python3",))),
        dataclasses.replace(recipe, code_version=recipe.code_version + 1),
        dataclasses.replace(recipe, changes=(*recipe.changes, "ENV X=1")),
    ]
    for variant in variants:
        monkeypatch.setitem(IMAGES, name, variant)
        assert recipe_hash(name) != before
    monkeypatch.setitem(IMAGES, name, recipe)
    assert recipe_hash(name) == before


def test_image_tag_names_the_recipe() -> None:
    assert image_tag("python-minimal") == (
        f"unibench/python-minimal:{recipe_hash('python-minimal')[:12]}"
    )


def test_unknown_image_lists_the_known_ones() -> None:
    with pytest.raises(ArtifactError, match="debian-python, python-minimal"):
        recipe_hash("alpine")
