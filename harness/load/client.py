"""Running one client program to its end (dnsperf, wrk): what it printed, how it exited, and
the CPU time it took, from wait4, so that nothing else the harness runs is counted."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class ClientRun:
    returncode: int
    output: str  # standard output and error, as printed
    cpu_seconds: float  # its own user and system time


def run_client(argv: list[str], timeout: float, install: str) -> ClientRun:
    """Run `argv`, killed after `timeout` seconds; `install` says how to get the program if it
    is missing (RuntimeError then)."""
    with tempfile.TemporaryFile() as output:
        try:
            process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
        except FileNotFoundError:
            raise RuntimeError(f"{argv[0]} is not installed: {install}") from None
        timer = threading.Timer(timeout, _kill, (process.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # interrupted: the client must not outlive the repeat
            _kill(process.pid)
            process.wait()
            raise
        finally:
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read().decode(errors="replace")
    return ClientRun(process.returncode, text, usage.ru_utime + usage.ru_stime)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
