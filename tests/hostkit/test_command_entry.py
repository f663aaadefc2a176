"""The console commands' entry point: Ctrl-C while a command loads is heard, after the load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.interrupts import interrupted_before_the_handler

ROOT = Path(__file__).resolve().parents[2]


def entered(tmp_path: Path, module_body: str) -> subprocess.CompletedProcess[str]:
    """Runs load_then_run() on a module made of `module_body`, as a console script would."""
    (tmp_path / "probe_command.py").write_text(module_body)
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from hostkit.command_entry import load_then_run; load_then_run('probe_command')",
        ],
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


MAIN = """
import signal

def main():
    print("ran", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""


def test_a_command_that_loads_uninterrupted_runs_with_ctrl_c_as_python_has_it(
    tmp_path: Path,
) -> None:
    done = entered(tmp_path, MAIN)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ran True\n"


def test_ctrl_c_while_loading_is_heard_once_loaded_and_the_command_does_not_run(
    tmp_path: Path,
) -> None:
    # Two interrupts mid-import, between which the import goes on: neither may cut it short.
    body = "import os, signal, time\n" + (
        "os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(0.05)\n" * 2
    )
    done = entered(tmp_path, body + MAIN)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr == "Aborted!\n"


SCRIPT = (
    "Traceback (most recent call last):\n"
    '  File "/srv/unibench/.venv/bin/bench", line 3, in <module>\n'
    "    from harness.entry import main\n"
)


def test_tracebacks_from_importing_the_entry_point_are_told_apart_from_ours() -> None:
    assert interrupted_before_the_handler(SCRIPT + "KeyboardInterrupt\n")
    importing = (
        '  File "/srv/unibench/hostkit/command_entry.py", line 16, in <module>\n'
        "    import signal\n"
        "    ^^^^^^^^^^^^^\n"
    )
    assert interrupted_before_the_handler(SCRIPT + importing + "KeyboardInterrupt\n")
    assert interrupted_before_the_handler("Fatal Python error: init_import_site: Failed\n")
    running = '  File "/srv/unibench/hostkit/command_entry.py", line 40, in load_then_run\n'
    assert not interrupted_before_the_handler(SCRIPT + running + "KeyboardInterrupt\n")
    assert not interrupted_before_the_handler(SCRIPT + "ImportError: no harness\n")
    assert not interrupted_before_the_handler("Aborted!\n" + SCRIPT + "KeyboardInterrupt\n")
