"""`bench run` stopped at random moments, as users and machines stop it: Ctrl-C (SIGINT to its
process group), SIGTERM, and SIGKILL, many times on every light target. After each: the store
is intact, every sample committed before is still there, the run's state says what happened,
and nothing the run made is left once it (or, after SIGKILL, the next run) has ended.

Set UNIBENCH_FAULT_SEED to replay a sequence; UNIBENCH_FAULTS to inject more than the default.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from harness.targets.docker import LABEL
from hostkit import cache, namespaces, owners
from hostkit.launch_disk import launch_disks_dir
from tests.support.interrupts import interrupted_before_the_handler
from tests.support.netns import require

pytestmark = pytest.mark.slow

BENCH = Path(sys.executable).parent / "bench"
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
FAULTS_PER_TARGET = int(os.environ.get("UNIBENCH_FAULTS", "21"))
REPEATS = ("--repeat", "3", "--warmup", "0")
EXIT_TIMEOUT = 90.0  # a harness that has not ended this long after a signal has hung
OUR_NAMESPACE = re.compile(r"^unibench-\d+-\d+$")  # a run's; not other tests' (unibench-t-)


@dataclass
class Outcome:
    signum: int
    delay: float
    status: int
    stderr: str


def bench_run(store: Path, target: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BENCH), "run", "--suite", "boot", "--target", target, *REPEATS],
        env={**os.environ, "BENCH_STORE": str(store)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a group of its own, as a shell's foreground job has
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, stderr = process.communicate(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"bench run did not end within {EXIT_TIMEOUT:.0f} s") from None
    return process.returncode, stderr


def inject(store: Path, target: str, signum: int, delay: float, benches: set[int]) -> Outcome:
    process = bench_run(store, target)
    benches.add(process.pid)
    time.sleep(delay)
    if signum == signal.SIGINT:  # Ctrl-C: the terminal signals the whole foreground group
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    status, stderr = finish(process)
    return Outcome(signum, delay, status, stderr)


def stored(store: Path) -> dict[str, tuple[str, list[tuple[str, int]]]]:
    """Each run: its status and its samples (metric, repeat). Fails unless the file is whole."""
    if not store.exists():
        return {}
    conn = sqlite3.connect(store)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        runs = dict(conn.execute("SELECT id, status FROM runs").fetchall())
        samples: dict[str, list[tuple[str, int]]] = {run: [] for run in runs}
        for run, metric, repeat in conn.execute("SELECT run_id, metric, repeat FROM samples"):
            samples[run].append((metric, repeat))
    finally:
        conn.close()
    return {run: (status, sorted(samples[run])) for run, status in runs.items()}


def leftovers(client: docker.DockerClient | None, benches: set[int]) -> list[str]:
    """Anything the `bench run` processes with these pids made that is still there. (Only
    theirs: other harnesses may be running on a developer's machine.)"""

    def ours(owner: str) -> bool:
        return owner.partition(".")[0] in {str(pid) for pid in benches}

    found = [f"process {p.pid} ({p.command})" for p in owners.marked_processes() if ours(p.owner)]
    found += [
        f"namespace {name}"
        for name in os.listdir(namespaces.NETNS_DIR)
        if OUR_NAMESPACE.match(name) and ours(name.split("-")[1])
    ]
    files = [*launch_disks_dir().glob("*.img"), *cache.directory("vm-overlays").glob("*.qcow2")]
    found += [f"file {p}" for p in files if any(f"{pid}-" in p.name for pid in benches)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    names = {line.split(":")[1].strip().split("@")[0] for line in links.stdout.splitlines()}
    found += [f"link {d}" for d in (namespaces.TAP_DEVICE, "veth0", "veth1") if d in names]
    if client is not None:
        found += [
            f"container {c['Names']} ({c['State']})"
            for c in client.api.containers(all=True, filters={"label": LABEL})
            if ours(c["Labels"][LABEL])
        ]
    return found


def check_ended(
    outcome: Outcome,
    before: dict[str, tuple[str, list[tuple[str, int]]]],
    after: dict[str, tuple[str, list[tuple[str, int]]]],
) -> str | None:
    """Checks one interrupted run against the store; the id of a run SIGKILL left running."""
    what = f"{signal.Signals(outcome.signum).name} after {outcome.delay:.2f} s"
    for run, (_, samples) in before.items():  # nothing committed is lost or changed
        assert run in after, f"{what}: run {run} vanished"
        assert after[run][1] == samples, f"{what}: run {run}'s samples changed"
    new = {run: entry for run, entry in after.items() if run not in before}
    assert len(new) <= 1, f"{what}: {len(new)} runs from one command"
    for _, samples in new.values():
        repeats = sorted({repeat for _, repeat in samples})
        assert repeats == list(range(len(repeats))), f"{what}: repeats {repeats} have a hole"
    if outcome.signum == signal.SIGKILL and outcome.status != 0:  # 0: it finished first
        assert outcome.status == -signal.SIGKILL, f"{what}: ended {outcome.status}"
        return next(iter(new), None)
    if not interrupted_before_the_handler(outcome.stderr):
        assert "Traceback" not in outcome.stderr, f"{what}: {outcome.stderr}"
    # 0: it finished first; 130: interrupted; 1: click's "Aborted!" (before or after the run
    # itself); -15 or -2: the signal came before the harness had its handlers (importing), or
    # after it gave them back (exiting).
    assert outcome.status in (0, 1, 130, -signal.SIGTERM, -signal.SIGINT), (
        f"{what}: {outcome.status}"
    )
    for status, _samples in new.values():
        if outcome.status == 0:
            assert status == "complete", f"{what}: a finished run is {status}"
        assert status in ("complete", "interrupted"), f"{what}: the run is left {status}"
    return None


@pytest.mark.parametrize(
    "target",
    [
        "process",
        "docker",
        "docker-minimal",
        "unikernel-hosted",
        "unikernel-hosted-veth",
        "linux-veth",
    ],
)
def test_runs_stopped_at_random_moments_lose_nothing_and_leave_nothing(
    target: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    require()
    client = request.getfixturevalue("docker_client") if target.startswith("docker") else None
    seed = int(os.environ.get("UNIBENCH_FAULT_SEED", random.randrange(1 << 30)))
    chance = random.Random(seed)
    store = tmp_path / "bench.sqlite"

    # Uninterrupted first: the first builds what the target needs, the second times a run.
    benches: set[int] = set()
    for _ in range(2):
        began = time.monotonic()
        whole_run = bench_run(store, target)
        benches.add(whole_run.pid)
        status, stderr = finish(whole_run)
        whole = time.monotonic() - began
        assert status == 0, stderr
        assert leftovers(client, benches) == []

    signals = [SIGNALS[i % len(SIGNALS)] for i in range(FAULTS_PER_TARGET)]
    chance.shuffle(signals)
    killed: list[str] = []  # runs SIGKILL left "running", until a later run sweeps
    for signum in signals:
        before = stored(store)
        outcome = inject(store, target, signum, chance.uniform(0.0, whole), benches)
        context = (
            f"seed {seed}, {signal.Signals(signum).name} after {outcome.delay:.2f} s, "
            f"exit {outcome.status}: {outcome.stderr}"
        )
        left_running = check_ended(outcome, before, stored(store))
        if left_running is not None:
            killed.append(left_running)
        if outcome.status >= 0 and len(stored(store)) > len(before):
            # It ran, and ended as it chose to: it cleaned up, and swept what runs before left.
            assert leftovers(client, benches) == [], context
            states = stored(store)
            assert [run for run in killed if states[run][0] == "running"] == [], context
            killed.clear()

    last = bench_run(store, target)  # the next run, after the last fault
    benches.add(last.pid)
    status, stderr = finish(last)
    assert status == 0, stderr
    assert leftovers(client, benches) == [], f"seed {seed}"
    assert all(state != "running" for state, _ in stored(store).values()), f"seed {seed}"
