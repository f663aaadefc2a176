"""Network namespaces for tests that talk to real Linux peers.

Each test gets its own namespace, named unibench-t-<pid>-<n>, and removes it whatever happens;
every Linux tool runs inside it (`ip netns exec`), so no frame leaves it. Tools run as
Processes that the unikernel's cooperative threads can wait for without blocking the stack
that must answer them.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from hostkit.namespaces import entered
from tests.support.programs import missing_programs, skip_or_fail
from unikernel.core.scheduler import fail_after, sleep, wait_readable

T = TypeVar("T")

PREFIX = "unibench-t"
_serial = itertools.count()


def require(*tools: str) -> None:
    """Skip unless we may create namespaces and TAP devices and have the tools; under CI
    (which runs as root with them installed) fail instead, so nothing passes silently."""
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root (network namespaces and TAP devices)")
    if not os.path.exists("/dev/net/tun"):
        problems.append("/dev/net/tun is missing")
    missing = missing_programs("ip", *tools)
    if missing:
        problems.append(f"missing tools: {', '.join(missing)}")
    if problems:
        skip_or_fail("; ".join(problems))


class Process:
    """A tool running inside a namespace, its output going to an in-memory file (a pipe could
    fill up and stall it while nobody reads)."""

    def __init__(self, argv: Sequence[str], stdin: bytes = b"") -> None:
        self.argv = list(argv)
        self._stdout = os.memfd_create("stdout")
        self._stderr = os.memfd_create("stderr")
        source = os.memfd_create("stdin")
        try:
            os.write(source, stdin)
            os.lseek(source, 0, os.SEEK_SET)
            self.popen = subprocess.Popen(
                self.argv, stdin=source, stdout=self._stdout, stderr=self._stderr
            )
        finally:
            os.close(source)

    async def wait(self, timeout: float) -> int:
        """Its exit status, waiting cooperatively; TimeoutError after `timeout` seconds."""
        pidfd = os.pidfd_open(self.popen.pid)  # readable once the process has exited
        try:
            with fail_after(timeout):
                await wait_readable(pidfd)
        finally:
            os.close(pidfd)
        return self.popen.wait(timeout=1)

    async def wait_output(self, size: int, timeout: float) -> bytes:
        """Its output once it holds `size` bytes; TimeoutError after `timeout` seconds."""
        with fail_after(timeout):
            while len(output := self.output()) < size:
                await sleep(0.01)
        return output

    def output(self) -> bytes:
        return _contents(self._stdout)

    def errors(self) -> str:
        return _contents(self._stderr).decode(errors="replace")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=5)

    def close(self) -> None:
        self.kill()
        for fd in (self._stdout, self._stderr):
            os.close(fd)


class Netns:
    def __init__(self) -> None:
        self.name = f"{PREFIX}-{os.getpid()}-{next(_serial)}"
        self._processes: list[Process] = []
        _run(["ip", "netns", "add", self.name])

    def ip(self, *args: str) -> str:
        """Run `ip` inside the namespace; its output."""
        return _run(["ip", "-n", self.name, *args])

    def spawn(self, argv: Sequence[str], stdin: bytes = b"") -> Process:
        """Start a tool inside the namespace; close() kills it if it still runs."""
        process = Process(["ip", "netns", "exec", self.name, *argv], stdin)
        self._processes.append(process)
        return process

    async def output(self, argv: Sequence[str], timeout: float = 5.0) -> str:
        """Run a tool inside the namespace to the end; its output (AssertionError if it fails)."""
        process = self.spawn(argv)
        status = await process.wait(timeout)
        assert status == 0, f"{argv} exited with {status}: {process.errors()}"
        return process.output().decode()

    async def wait_udp_listener(self, port: int, timeout: float = 5.0) -> None:
        """Until a UDP socket in the namespace is bound to `port`."""
        with fail_after(timeout):
            while not (await self.output(["ss", "-H", "-u", "-l", "-n", f"sport = :{port}"])):
                await sleep(0.02)

    def call_inside(self, fn: Callable[[], T]) -> T:
        """fn() run inside the namespace: by a thread that enters it and then ends, as devices
        and sockets belong to the namespace of whoever opens them."""
        results: list[T] = []
        errors: list[BaseException] = []

        def enter_and_call() -> None:
            try:
                with entered(self.name):
                    results.append(fn())
            except BaseException as error:
                errors.append(error)

        thread = threading.Thread(target=enter_and_call, name=f"in {self.name}")
        thread.start()
        thread.join(timeout=10)
        if errors:
            raise errors[0]
        if not results:
            raise TimeoutError(f"calling into {self.name} did not finish")
        return results[0]

    def close(self) -> None:
        """Kill what still runs inside, then remove the namespace and every device in it."""
        try:
            for process in self._processes:
                process.close()
        finally:
            _run(["ip", "netns", "delete", self.name])


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if result.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


def _contents(fd: int) -> bytes:
    # pread: the tool shares the file's offset, which a seek here would move under it.
    return os.pread(fd, os.fstat(fd).st_size, 0)
