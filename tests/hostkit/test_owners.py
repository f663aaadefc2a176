"""Owner tokens, and the processes of dead owners found and killed by them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from hostkit import owners
from tests.support.processes import dead_pid, wait_for_exec

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def dead_token() -> str:
    """The token of a process that has exited: its pid, and a start no process has now."""
    return f"{dead_pid()}.1"


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.kill()
        process.wait()


def spawn_owned(owner: str, processes: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        SLEEPER, env={**os.environ, owners.OWNER_VARIABLE: owner}, start_new_session=True
    )
    processes.append(process)
    wait_for_exec(process.pid, SLEEPER)
    return process


def test_a_token_is_alive_while_its_process_runs_and_not_after() -> None:
    assert owners.token_alive(owners.token())
    assert not owners.token_alive(dead_token())


def test_a_recycled_pid_is_not_its_earlier_owner() -> None:
    pid, _, ticks = owners.token().partition(".")
    assert not owners.token_alive(f"{pid}.{int(ticks) + 1}")
    assert owners.token_alive(pid)  # a bare pid (an older label) errs on the side of keeping


def test_the_processes_of_a_dead_owner_are_killed_and_a_live_owners_kept(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    orphan = spawn_owned(dead_token(), spawned)
    kept = spawn_owned(owners.token(), spawned)
    unmarked = subprocess.Popen(SLEEPER, start_new_session=True)
    spawned.append(unmarked)
    killed = owners.kill_orphans()
    assert [leftover.pid for leftover in killed] == [orphan.pid]
    assert orphan.wait(timeout=5) == -9
    assert kept.poll() is None and unmarked.poll() is None


def test_an_orphans_group_goes_with_it(spawned: list[subprocess.Popen[bytes]]) -> None:
    """A workload's child that dropped the variable is in the workload's group."""
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], env={})\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    leader = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**os.environ, owners.OWNER_VARIABLE: dead_token()},
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    spawned.append(leader)
    assert leader.stdout is not None
    child = int(leader.stdout.readline())  # the leader runs its script: it has exec'd
    owners.kill_orphans()
    assert leader.wait(timeout=5) == -9
    assert _dies(child)


def _dies(pid: int) -> bool:
    """Whether `pid` is gone, or a zombie, within 5 s: SIGKILL sent is not yet acted on, and
    on a busy machine the process dies a moment later."""
    try:
        process = psutil.Process(pid)
        process.wait(timeout=5)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return process.status() == psutil.STATUS_ZOMBIE  # dead, not reaped by its new parent
    return True


def test_marked_sets_the_variable_for_children_and_restores_it() -> None:
    before = os.environ.get(owners.OWNER_VARIABLE)
    with owners.marked() as token:
        seen = subprocess.run(
            [sys.executable, "-c", f"import os; print(os.environ['{owners.OWNER_VARIABLE}'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert seen == token
        assert owners.OWNER_VARIABLE not in owners.unmarked_environment()
    assert os.environ.get(owners.OWNER_VARIABLE) == before
