"""Host programs a test needs: skipped where they are missing, but under CI (which installs
them all, see scripts/bootstrap.sh) a failure, so nothing passes silently."""

from __future__ import annotations

import os
import shutil

import pytest


def missing_programs(*programs: str) -> list[str]:
    return [program for program in programs if shutil.which(program) is None]


def skip_or_fail(problem: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test: {problem}")
    pytest.skip(problem)


def require_programs(*programs: str) -> None:
    missing = missing_programs(*programs)
    if missing:
        skip_or_fail(f"missing programs: {', '.join(missing)} (scripts/bootstrap.sh installs them)")
