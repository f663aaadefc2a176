"""Running locust headless, with its own master and workers, against one server.

    report = run_locust([(url, instance.namespace)], users=100, seconds=10, app="static",
                        pages=SITE_PAGES, timeout=ctx.remaining())

The master (which runs no users) and a worker process per core run locust_sessions.py; with
several servers (instances scaled out), each gets a master and its share of the workers and
users. All of them start inside the server's network namespace when it has one,
so that the master and its workers meet on that namespace's loopback and the users reach the
server over the target's link. Statistics are reset once every user is spawned (spawning
includes the dynamic users' sign-up), so the figures cover the steady state only. Locust's
final statistics (--json-file) hold each entry's histogram of response times, rounded to
whole milliseconds below 100 ms as locust keeps them: the requests' entries are merged into
one distribution. The CPU time of the master and workers comes from wait4.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.load.report import SESSION_TYPE, LoadReport, histogram_percentile
from harness.targets.base import free_port

# Run by locust, never imported here: locust patches the standard library with gevent.
LOCUSTFILE = Path(__file__).resolve().parent / "locust_sessions.py"
START_GRACE = 30.0  # seconds for the workers to connect and the users to spawn
STOP_GRACE = 10.0  # seconds past the end for users to finish their session
CPU_WARNING = "CPU usage above"  # locust's own warning that a process was short of CPU


def worker_count() -> int:
    """One worker per core this process may run on."""
    return len(os.sched_getaffinity(0))


def locust_command(namespace: str | None, *args: str) -> list[str]:
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args]
    return ["ip", "netns", "exec", namespace, *argv] if namespace is not None else argv


def run_locust(
    places: Sequence[tuple[str, str | None]],
    *,
    users: int,
    seconds: float,
    app: str,
    pages: Sequence[str] = (),
    timeout: float,
) -> LoadReport:
    """Locust against the servers at `places` (URL, and the namespace it is reached from) for
    `seconds`, with `users` users in all, shared out evenly, each running sessions back to
    back. Each place gets a master and its share of the workers (one per core in all, at
    least one each); their statistics are merged. Killed (and RuntimeError) if not finished
    within `timeout` seconds."""
    if not places:
        raise ValueError("no server to load")
    workers = max(1, worker_count() // len(places))
    shares = [users // len(places) + (index < users % len(places)) for index in range(len(places))]
    environment = {
        **os.environ,
        "UNIBENCH_WEB_APP": app,
        "UNIBENCH_WEB_PAGES": ",".join(pages),
        "PYTHONUNBUFFERED": "1",
    }
    with tempfile.TemporaryDirectory(prefix="unibench-locust-") as folder:
        commands: list[list[str]] = []
        stats: list[Path] = []
        for index, ((url, namespace), share) in enumerate(zip(places, shares, strict=True)):
            stats.append(Path(folder) / f"stats-{index}.json")
            port = free_port("tcp")  # a namespace's own loopback has it free too
            commands.append(
                locust_command(
                    namespace, *_master_args(url, port, share, workers, seconds, stats[-1])
                )
            )
            worker_args = ["--worker", "--master-host=127.0.0.1", f"--master-port={port}"]
            commands += [locust_command(namespace, *worker_args, "--reset-stats")] * workers
        logs = [Path(folder) / f"process-{index}.log" for index in range(len(commands))]
        processes: list[subprocess.Popen[bytes]] = []
        try:
            for command, log_path in zip(commands, logs, strict=True):
                with log_path.open("wb") as log:
                    processes.append(
                        subprocess.Popen(
                            command,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            env=environment,
                            start_new_session=True,
                        )
                    )
            cpu, codes = _wait_all(processes, timeout)
        finally:
            for process in processes:
                _kill_group(process)
                with contextlib.suppress(ChildProcessError):
                    process.wait()
        output = "\n".join(log.read_text(errors="replace") for log in logs if log.exists())
        masters = range(0, len(commands), workers + 1)
        failed = [codes[index] for index in masters if codes[index] != 0]
        if failed:
            raise RuntimeError(f"locust's master exited with {failed[0]}: {output.strip()[-800:]}")
        if not all(path.exists() for path in stats):
            raise RuntimeError(f"locust wrote no statistics: {output.strip()[-800:]}")
        entries = [entry for path in stats for entry in json.loads(path.read_text())]
    return parse_locust_stats(
        entries,
        cpu,
        client_cores=workers * len(places),
        warned=CPU_WARNING in output,
        seconds=seconds,
    )


def _master_args(
    url: str, port: int, users: int, workers: int, seconds: float, stats: Path
) -> list[str]:
    return [
        "--master",
        "--headless",
        "--master-bind-host=127.0.0.1",
        f"--master-bind-port={port}",
        f"--expect-workers={workers}",
        f"--expect-workers-max-wait={int(START_GRACE)}",
        f"--users={users}",
        f"--spawn-rate={max(users, 1)}",  # all at once: the load is closed-loop
        f"--run-time={max(1, round(seconds))}s",
        f"--host={url}",
        "--reset-stats",
        "--only-summary",
        f"--stop-timeout={int(STOP_GRACE)}",
        "--exit-code-on-error=0",  # errors are measured, not a failed run
        f"--json-file={stats.with_suffix('')}",
    ]


def _wait_all(
    processes: Sequence[subprocess.Popen[bytes]], timeout: float
) -> tuple[float, list[int]]:
    """Wait for every process (the master first: workers quit when it does), killing all at
    `timeout`; their CPU time, user and system, and their exit codes."""
    killed = threading.Event()

    def kill_all() -> None:
        killed.set()
        for process in processes:
            _kill_group(process)

    timer = threading.Timer(timeout, kill_all)
    timer.start()
    cpu = 0.0
    codes: list[int] = []
    try:
        for process in processes:
            # wait4: each child's own CPU time, whatever else the harness runs.
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            codes.append(process.returncode)
            cpu += usage.ru_utime + usage.ru_stime
    finally:
        timer.cancel()
    if killed.is_set():
        raise RuntimeError(f"locust did not finish within {timeout:.0f} s and was killed")
    return cpu, codes


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def parse_locust_stats(
    entries: Sequence[dict[str, Any]],
    client_cpu_seconds: float,
    *,
    client_cores: int,
    warned: bool,
    seconds: float,
) -> LoadReport:
    """Locust's final statistics (its --json-file): requests are every entry but the
    sessions, merged; rates over the time from the first to the last request measured."""
    requests = [entry for entry in entries if entry["method"] != SESSION_TYPE]
    sessions = [entry for entry in entries if entry["method"] == SESSION_TYPE]
    count = sum(int(entry["num_requests"]) for entry in requests)
    if count == 0:
        raise RuntimeError("locust made no request: is the server reachable?")
    start = min(float(entry["start_time"]) for entry in requests)
    end = max(float(entry["last_request_timestamp"]) for entry in requests)
    elapsed = end - start if end > start else seconds
    histogram: Counter[float] = Counter()
    for entry in requests:
        for milliseconds, times in entry["response_times"].items():
            histogram[float(milliseconds) / 1000.0] += int(times)
    session_count = sum(
        int(entry["num_requests"]) - int(entry["num_failures"]) for entry in sessions
    )
    return LoadReport(
        requests_per_second=count / elapsed,
        sessions_per_second=session_count / elapsed if sessions else 0.0,
        latency_p50=histogram_percentile(histogram, 0.50),
        latency_p95=histogram_percentile(histogram, 0.95),
        latency_p99=histogram_percentile(histogram, 0.99),
        requests=count,
        errors=sum(int(entry["num_failures"]) for entry in requests),
        client_cpu_seconds=client_cpu_seconds,
        client_cores=client_cores,  # a worker per core; the master's share is small
        seconds=elapsed,
        client_warned=warned,
    )
