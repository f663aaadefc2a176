"""The writer the crash tests kill, and the check of what it leaves.

Operation n acts on key "k{n % KEYS}": a delete when n % DELETE_EVERY == 0, else a put of
value_of(n), which names n and can be told from any other value. THREADS threads write at once
(thread t does the n = t mod THREADS), each printing "ACK n" once its operation returned, so
every key's operations come from one thread, one at a time.

The same file runs as a hosted child process (python crash_workload.py DISK START) and is copied
into a unikernel image (write_forever() from the app's main), so it imports only the standard
library and the unikernel.
"""

from __future__ import annotations

import os
import sys

from unikernel.block.log_store import LogStore

KEYS = 64
THREADS = 4  # divides KEYS: a key's operations all come from one thread
DELETE_EVERY = 7
ACK = "ACK "

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping


def key_of(n: int) -> bytes:
    return b"k%d" % (n % KEYS)


def is_delete(n: int) -> bool:
    return n % DELETE_EVERY == 0


def value_of(n: int) -> bytes:
    """From 9 bytes to 3.6 KiB: records of one to eight sectors."""
    return b"%08d;" % n * (1 + n * 37 % 400)


async def write_forever(store: LogStore, start: int, say: Callable[[str], None]) -> None:
    from unikernel.core.scheduler import spawn

    async def writer(thread: int) -> None:
        n = start + (thread - start) % THREADS
        while True:
            if is_delete(n):
                await store.delete(key_of(n))
            else:
                await store.put(key_of(n), value_of(n))
            say(f"{ACK}{n}")
            n += THREADS

    threads = [spawn(writer, thread) for thread in range(THREADS)]
    for thread in threads:
        await thread.join()


def problems(
    contents: Mapping[bytes, bytes], acked: Iterable[int], attempted_below: int
) -> list[str]:
    """What is wrong with a store's `contents` after a crash, given the operations acknowledged
    and that none at or past `attempted_below` ever began."""
    last: dict[bytes, int] = {}
    for n in sorted(acked):
        last[key_of(n)] = n
    found = []
    for key in contents:
        if not key.startswith(b"k") or not key[1:].isdigit() or int(key[1:]) >= KEYS:
            found.append(f"{key!r}: a key never written")
    for index in range(KEYS):
        key = b"k%d" % index
        since = last.get(key)
        value = contents.get(key)
        later = range(index if since is None else since + KEYS, attempted_below, KEYS)
        if value is None:
            # Absent: never written, or deleted by the last acknowledged operation on the key,
            # or by one after it that was under way at the crash.
            if since is not None and not is_delete(since) and not any(map(is_delete, later)):
                found.append(f"{key!r}: missing; ACK {since} put it")
            continue
        n = int(value[:8]) if value[:8].isdigit() else -1
        if n < 0 or value != value_of(n) or key_of(n) != key or is_delete(n):
            found.append(f"{key!r}: {value[:40]!r}... was never written")
        elif since is not None and n < since:
            found.append(f"{key!r}: holds the value of {n}, older than ACK {since}")
        elif n >= attempted_below:
            found.append(f"{key!r}: holds the value of {n}, never attempted")
    return found


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # unbuffered: an ACK printed is an ACK the test sees


async def _hosted(path: str, start: int) -> None:
    from unikernel.drivers.rawdisk import RawDisk

    store = await LogStore.open(RawDisk(path, read_only=False))
    _say("OPEN")
    await write_forever(store, start, _say)


if __name__ == "__main__":
    from unikernel.core.scheduler import run

    run(_hosted, sys.argv[1], int(sys.argv[2]))
