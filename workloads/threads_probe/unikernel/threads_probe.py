"""Thread creation and timer jitter on the unikernel's cooperative threads.

The same experiments as workloads/threads_probe.py runs with asyncio and OS threads on Linux,
reported in the same console format (that file carries its own copy of the format: containers
hold that one script alone).
"""

import os

from unikernel.core.devices import Devices
from unikernel.core.scheduler import now, sleep_until, spawn
from unikernel.core.sync import Event

QUANTILES = 1000


def quantiles(values: list[float]) -> list[float]:
    ordered = sorted(values)
    last = len(ordered) - 1
    return [ordered[round(i * last / QUANTILES)] for i in range(QUANTILES + 1)]


async def nothing() -> None:
    pass


async def create(count: int) -> float:
    began = now()
    threads = [spawn(nothing) for _ in range(count)]
    for thread in threads:
        await thread.join()
    return now() - began


async def jitter(count: int, period: float, rounds: int) -> list[float]:
    lateness: list[float] = []

    go, start = Event(), [0.0]

    async def sleeper(index: int) -> None:
        await go.wait()  # the deadlines start once every thread exists
        deadline = start[0] + index * period / count
        for _ in range(rounds):
            await sleep_until(deadline)
            lateness.append(now() - deadline)
            deadline += period

    threads = [spawn(sleeper, i) for i in range(count)]
    start[0] = now() + period
    go.set()
    for thread in threads:
        await thread.join()
    return lateness


async def main(devices: Devices) -> int:
    console = devices.console
    mode = os.environ.get("UNIBENCH_MODE", "create")
    count = int(os.environ.get("UNIBENCH_COUNT", "1000"))
    if mode == "create":
        console.line(f"UNIBENCH-RESULT create_seconds={await create(count):.6f}")
    elif mode == "jitter":
        period = float(os.environ.get("UNIBENCH_PERIOD", "1.0"))
        lateness = await jitter(count, period, int(os.environ.get("UNIBENCH_ROUNDS", "3")))
        console.line(
            "UNIBENCH-QUANTILES lateness " + " ".join(f"{v:.9f}" for v in quantiles(lateness))
        )
        console.line(f"UNIBENCH-RESULT wakeups={len(lateness)}")
    else:
        console.line(f"threads-probe: unknown UNIBENCH_MODE {mode!r}")
        return 2
    return 0
