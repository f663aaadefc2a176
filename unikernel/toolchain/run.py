"""`unikernel run`: run a built image here, with the devices its application declares.

A network gets a namespace of its own holding a TAP device (the image at 10.203.0.2, Linux's side
at 10.203.0.1), as the harness gives one to every networked launch: reach the app from there with
`ip netns exec NAME ...`. A disk gets its backing file, or a blank file for this run. The app's
console is copied to ours. The run ends when the app does, at the timeout (the image is killed),
or on Ctrl-C or SIGTERM; whichever way, the process, the namespace and the blank disks go.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from typing import IO

from hostkit import namespaces
from hostkit.accel import choose_accel
from hostkit.interrupts import signal_of, signals_deferred, terminate_as_interrupt
from hostkit.launch_disk import LaunchDisk
from hostkit.namespaces import TapLink, entered
from hostkit.qemu import guest_status
from unikernel.devices import Disk, Network
from unikernel.toolchain.app import AppError, LoadedApp
from unikernel.toolchain.image import BuildResult
from unikernel.toolchain.launch import launch

EXIT_MARKER = "UNIBENCH-EXIT status="
TIMED_OUT = 124  # as timeout(1) says it
INTERRUPTED = 130
KILL_GRACE = 10.0  # for the console's last lines once the image is gone

Say = Callable[[str], None]


def run_image(
    loaded: LoadedApp,
    built: BuildResult,
    *,
    params: Mapping[str, str],
    timeout: float,
    memory_mib: int | None = None,
    accel: str = "auto",
    out: IO[str] = sys.stdout,
    say: Say = lambda text: print(text, file=sys.stderr),
) -> int:
    """Runs the image until it ends or `timeout` seconds pass; its exit status (124 at the
    timeout, 128 + the signal's number if interrupted)."""
    if built.target not in ("hosted", "qemu"):
        raise AppError(
            f"`unikernel run` runs hosted and qemu images; a {built.target} image starts under "
            "its toolstack: `bench run --target unikernel-xen` runs it in the Xen lab"
        )
    app = loaded.app
    try:
        with terminate_as_interrupt(once=True), contextlib.ExitStack() as made:
            link = None
            if app.devices_of(Network):
                why_not = namespaces.available()
                if why_not is not None:
                    raise AppError(
                        f"{app.name} declares a network, but no link can be made: {why_not}"
                    )
                namespaces.remove_stale()
                with signals_deferred():  # made and owned at once, or neither
                    link = TapLink()
                    made.callback(link.close)
                say(
                    f"network: namespace {link.name}, the app at {link.guest_address}, "
                    f"Linux's side {link.host_address} (ip netns exec {link.name} ...)"
                )
            disks = []
            for declared in app.devices_of(Disk):
                with signals_deferred():
                    disk = LaunchDisk(declared)
                    made.callback(disk.close)
                disks.append(disk)
                say(f"disk {disk.name}: {disk.path}{' (read-only)' if disk.read_only else ''}")
            chosen = choose_accel() if accel == "auto" else accel
            command = launch(
                built,
                params=params,
                link=link,
                disks=disks,
                memory_mib=memory_mib or app.memory_mib,
                accel=chosen,
            )
            return _supervise(command.argv, command.environment, link, timeout, out, say)
    except KeyboardInterrupt as interruption:  # Ctrl-C, or SIGTERM as Interrupted
        signum = signal_of(interruption)
        say(f"interrupted ({signal.Signals(signum).name}): everything the run made was removed")
        return 128 + signum


def _supervise(
    argv: list[str],
    environment: Mapping[str, str],
    link: TapLink | None,
    timeout: float,
    out: IO[str],
    say: Say,
) -> int:
    process: subprocess.Popen[bytes] | None = None
    copier: threading.Thread | None = None
    reported: list[int] = []
    try:
        # Held back while spawning, so none lands between the child's birth and our knowing its
        # pid; one that came meanwhile is raised as the block ends, inside the try whose finally
        # kills the child.
        with signals_deferred(), entered(None if link is None else link.name):
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, **environment},
                start_new_session=True,  # one process group, killed whole
            )
        assert process.stdout is not None
        copier = threading.Thread(target=_copy_console, args=(process.stdout, out, reported))
        copier.start()
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            say(f"timed out after {timeout:g} s: the image was killed")
            return TIMED_OUT
    finally:
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if copier is not None:
            copier.join(KILL_GRACE)
        out.flush()
    if argv[0].startswith("qemu-system"):
        from_port = guest_status(code)
        if from_port is not None:
            return from_port
        if reported:
            return reported[-1]
        say(f"the VM stopped (QEMU status {code}) without reporting an exit status")
        return 1
    return code


def _copy_console(source: IO[bytes], out: IO[str], reported: list[int]) -> None:
    for raw in iter(source.readline, b""):
        line = raw.decode(errors="replace")
        out.write(line)
        out.flush()
        if line.startswith(EXIT_MARKER):
            with contextlib.suppress(ValueError, IndexError):
                reported.append(int(line[len(EXIT_MARKER) :].split()[0]))


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    """NAME=VALUE pairs, as `--param` gives them."""
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise AppError(f"--param {pair!r}: write NAME=VALUE, NAME an identifier")
        params[name] = value
    return params
