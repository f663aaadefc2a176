"""Who made a thing on this host, and whether its maker still lives.

A harness killed with SIGKILL cleans nothing up, so everything it makes carries its owner: the
processes it spawns inherit OWNER_VARIABLE in their environment (which a child has from its first
instruction, so no moment of a launch is unmarked), and names of namespaces, files and Xen
guests hold its pid. The next harness (`bench run`, `bench doctor --clean`) removes what dead
owners left.

An owner token is the pid and the process's start time, so a recycled pid is not mistaken for
its earlier owner.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

OWNER_VARIABLE = "UNIBENCH_OWNER"
_KILL_WAIT = 5.0  # seconds for killed leftovers to go; they are init's to reap, not ours


def _stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command's ")" (field 3 of proc(5) on), or None
    if there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if there is no such pid."""
    fields = _stat(pid)
    return None if fields is None else int(fields[19])  # field 22 of proc(5)


def token(pid: int | None = None) -> str:
    """The owner token of `pid` (this process by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}.{_start_ticks(pid) or 0}"


def token_alive(owner: str) -> bool:
    """Whether the process a token names is still running. A bare pid (an older token) is taken
    as alive while any process has it, which errs on the side of keeping things."""
    pid_text, _, ticks = owner.partition(".")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    started = _start_ticks(pid)
    if started is None:
        return False
    return not ticks or ticks == str(started)


def pid_alive(pid: int) -> bool:
    return _start_ticks(pid) is not None


@dataclass(frozen=True)
class Leftover:
    pid: int
    owner: str
    command: str


def _owner_of(pid: int) -> str | None:
    prefix = OWNER_VARIABLE.encode() + b"="
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            entries = environ.read().split(b"\0")
    except OSError:
        return None
    for entry in entries:
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _pids() -> Iterator[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def marked_processes() -> list[Leftover]:
    """Every other process that carries an owner token, whoever its owner."""
    mine = os.getpid()
    found = []
    for pid in _pids():
        owner = _owner_of(pid)
        if owner is not None and pid != mine:
            found.append(Leftover(pid, owner, _command(pid)))
    return found


def orphans() -> list[Leftover]:
    """Processes whose owner token names a harness that is gone."""
    verdicts: dict[str, bool] = {}
    found = []
    for leftover in marked_processes():
        if leftover.owner not in verdicts:
            verdicts[leftover.owner] = token_alive(leftover.owner)
        if not verdicts[leftover.owner]:
            found.append(leftover)
    return found


def kill_orphans() -> list[Leftover]:
    """Kills the processes dead harnesses left, with their groups (a workload's children that
    dropped the variable are in its group); returns what was killed."""
    killed = orphans()
    kill_groups([leftover.pid for leftover in killed])
    return killed


def kill_groups(pids: list[int]) -> None:
    """SIGKILL to each process, and to the group of each that leads one (as workloads do,
    started in sessions of their own); a process in someone else's group (a pipeline the
    harness ran in) goes alone. Then wait, boundedly, until none runs."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + _KILL_WAIT
    while time.monotonic() < deadline and any(_running(pid) for pid in pids):
        time.sleep(0.02)


def _running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie holds nothing any more)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in (b"Z", b"X")


@contextlib.contextmanager
def marked() -> Iterator[str]:
    """For the block, every process this one spawns carries its owner token. Yields it."""
    previous = os.environ.get(OWNER_VARIABLE)
    mine = token()
    os.environ[OWNER_VARIABLE] = mine
    try:
        yield mine
    finally:
        if previous is None:
            os.environ.pop(OWNER_VARIABLE, None)
        else:
            os.environ[OWNER_VARIABLE] = previous


def unmarked_environment() -> dict[str, str]:
    """This process's environment without the owner token: for what must outlive us on purpose
    (the Xen lab a user starts)."""
    return {name: value for name, value in os.environ.items() if name != OWNER_VARIABLE}
