"""The threads workload for Linux targets: thread creation, and timer jitter.

Usage: python3 -I -S threads_probe.py --mode create|jitter --kind asyncio|pthread
                                      --count N [--period SECONDS] [--rounds R]

create: start N threads (asyncio tasks, or OS threads at most BATCH alive at once) that each do
nothing, and wait for them all; reports the seconds that took.
jitter: N threads each sleep to a deadline every `period` seconds, for `rounds` rounds, their
first deadlines spread evenly over the period after the last thread was created (creating them
is the create experiment's business, not lateness); reports how late each wake-up was.

Results come on the console as `UNIBENCH-RESULT name=value ...` and, for jitter,
`UNIBENCH-QUANTILES lateness q0 q1 ... q1000` (seconds, 0.1 % steps), which the unikernel's
threads application prints the same way.
"""

import sys
import threading
import time

BATCH = 1000  # OS threads alive at once: enough to overlap, few enough for any host's limits
QUANTILES = 1000


def quantiles(values: list[float]) -> list[float]:
    ordered = sorted(values)
    last = len(ordered) - 1
    return [ordered[round(i * last / QUANTILES)] for i in range(QUANTILES + 1)]


def report(seconds: float | None = None, lateness: list[float] | None = None) -> None:
    if seconds is not None:
        print(f"UNIBENCH-RESULT create_seconds={seconds:.6f}")
    if lateness is not None:
        q = quantiles(lateness)
        print("UNIBENCH-QUANTILES lateness " + " ".join(f"{v:.9f}" for v in q))
        print(f"UNIBENCH-RESULT wakeups={len(lateness)}")
    sys.stdout.flush()


def create_asyncio(count: int) -> float:
    import asyncio

    async def nothing() -> None:
        pass

    async def main() -> float:
        began = time.perf_counter()
        tasks = [asyncio.create_task(nothing()) for _ in range(count)]
        for task in tasks:
            await task
        return time.perf_counter() - began

    return asyncio.run(main())


def create_pthread(count: int) -> float:
    began = time.perf_counter()
    for start in range(0, count, BATCH):
        batch = [threading.Thread(target=int) for _ in range(min(BATCH, count - start))]
        for thread in batch:
            thread.start()
        for thread in batch:
            thread.join()
    return time.perf_counter() - began


def jitter_asyncio(count: int, period: float, rounds: int) -> list[float]:
    import asyncio

    lateness: list[float] = []

    async def sleeper(index: int, go: asyncio.Event, start: list[float]) -> None:
        await go.wait()
        deadline = start[0] + index * period / count
        for _ in range(rounds):
            await asyncio.sleep(deadline - time.monotonic())
            lateness.append(time.monotonic() - deadline)
            deadline += period

    async def main() -> None:
        go, start = asyncio.Event(), [0.0]
        tasks = [asyncio.create_task(sleeper(i, go, start)) for i in range(count)]
        start[0] = time.monotonic() + period
        go.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    return lateness


def jitter_pthread(count: int, period: float, rounds: int) -> list[float]:
    lateness: list[float] = []
    lock = threading.Lock()

    go, start = threading.Event(), [0.0]

    def sleeper(index: int) -> None:
        go.wait()
        deadline = start[0] + index * period / count
        for _ in range(rounds):
            time.sleep(max(0.0, deadline - time.monotonic()))
            late = time.monotonic() - deadline
            with lock:
                lateness.append(late)
            deadline += period

    threads = [threading.Thread(target=sleeper, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    start[0] = time.monotonic() + period
    go.set()
    for thread in threads:
        thread.join()
    return lateness


def main(argv: list[str]) -> None:
    options = dict(zip(argv[::2], argv[1::2], strict=False))
    mode, kind = options.get("--mode"), options.get("--kind")
    count = int(options.get("--count", "1000"))
    period = float(options.get("--period", "1.0"))
    rounds = int(options.get("--rounds", "3"))
    print("UNIBENCH-READY", flush=True)
    if mode == "create" and kind in ("asyncio", "pthread"):
        report(seconds=(create_asyncio if kind == "asyncio" else create_pthread)(count))
    elif mode == "jitter" and kind in ("asyncio", "pthread"):
        measure = jitter_asyncio if kind == "asyncio" else jitter_pthread
        report(lateness=measure(count, period, rounds))
    else:
        raise SystemExit(f"threads_probe.py: unknown --mode {mode} / --kind {kind}")


if __name__ == "__main__":
    main(sys.argv[1:])
