"""Running one client program: its output, exit status and own CPU time; killed at its
timeout; a missing program said with how to install it."""

from __future__ import annotations

import sys
import time

import pytest

from harness.load.client import run_client


def test_output_status_and_cpu_time() -> None:
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    done = run_client([sys.executable, "-c", burn + "print('done'); raise SystemExit(3)"], 30, "")
    assert (done.returncode, done.output.strip()) == (3, "done")
    assert 0.25 <= done.cpu_seconds < 5


def test_a_client_past_its_timeout_is_killed() -> None:
    start = time.monotonic()
    done = run_client([sys.executable, "-c", "import time; time.sleep(60)"], 0.5, "")
    assert done.returncode == -9
    assert time.monotonic() - start < 10


def test_a_missing_program_says_how_to_install_it() -> None:
    with pytest.raises(RuntimeError, match="not-a-program is not installed: apt-get install x"):
        run_client(["not-a-program"], 1, "apt-get install x")
