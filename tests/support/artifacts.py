"""Guards for unit tests that must never build a heavy artifact, and the check that one is
cached for the integration tests that boot it."""

from __future__ import annotations

import os
import shutil

import pytest

from unikernel.toolchain.kernel import find_specialized_kernel


def refuse(*_args: object) -> None:
    pytest.fail("a unit test started a build")


def require_specialized_kernel() -> None:
    """Skip unless QEMU is installed and the specialized kernel is cached; under CI (whose
    run-tests builds it first) fail instead."""
    if shutil.which("qemu-system-x86_64") is None:
        problem = "qemu-system-x86_64 is not installed"
    elif find_specialized_kernel() is None:
        problem = (
            "no cached specialized kernel: run `python -m unikernel.toolchain.kernel --specialized`"
        )
    else:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must pre-build what it boots: {problem}")
    pytest.skip(problem)
