"""What PID 1 does in a unikernel image, and what a hosted unikernel does first.

Python is the only process. Before the application runs, the boot layer mounts what the kernel
offers (devices, proc, sys), loads the kernel modules the app's devices need (none under the
specialized kernel), wires the app's devices to the drivers the build chose (bringing the VM's
NICs up), and prints the ready marker with its own boot-clock time. It then calls the app's
`main(devices)`. After it returns, it prints the exit marker and
powers the VM off, carrying the exit status out where the VMM can tell it (QEMU's debug-exit port).

The build compiles the application's configuration into the module `_unikernel_config`
(unikernel/toolchain/wiring.py writes it).
"""

from __future__ import annotations

import os
import sys
import time

import _unikernel_config as config

from unikernel.core import lifecycle
from unikernel.core.console import Console

TYPE_CHECKING = False
if TYPE_CHECKING:
    from unikernel.core.devices import Devices

READY_MARKER = "UNIBENCH-READY"
EXIT_MARKER = "UNIBENCH-EXIT"
DEBUG_EXIT_PORT = 0xF4  # QEMU's isa-debug-exit: the VMM exits with status (value << 1) | 1
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8


def in_vm() -> bool:
    return lifecycle.should_power_off(os.getpid(), config.TARGET)


def mount_kernel_filesystems() -> None:
    from unikernel.core.kernel_calls import mount

    # Over the initramfs's few static nodes: devtmpfs has every device, block devices included.
    mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def load_kernel_modules(paths: tuple[str, ...], console: Console) -> None:
    """Load, in order, the kernel modules the build put into the image for the app's devices
    (Debian's cloud kernel builds its virtio drivers as modules). One already loaded or built
    in is fine; another failure is said, not fatal: the app fails with the reason if it needs
    that device."""
    from errno import EEXIST, errorcode

    from unikernel.core.kernel_calls import load_module

    for path in paths:
        try:
            load_module(path)
        except OSError as error:
            if error.errno != EEXIST:
                number = error.errno or 0
                console.line(
                    f"boot: kernel module {path.rpartition('/')[2]} did not load: errno {number}"
                    f" {errorcode.get(number, '?')} ({os.strerror(number)})"
                )


def report_exit(console: Console, status: int) -> None:
    sys.stdout.flush()  # what the app print()ed comes before the marker, as it was written
    console.line(f"{EXIT_MARKER} status={status}")
    if in_vm() and config.TARGET == "qemu":
        try:
            fd = os.open("/dev/port", os.O_WRONLY)
            os.lseek(fd, DEBUG_EXIT_PORT, os.SEEK_SET)
            os.write(fd, bytes([status & 0xFF]))  # QEMU exits here when the device is present
            os.close(fd)
        except OSError:
            pass  # a kernel without /dev/port: the status is on the console, power off below


def power_off(console: Console) -> None:
    from unikernel.core.kernel_calls import power_off as kernel_power_off

    try:
        kernel_power_off()
    except OSError as error:
        console.line(f"boot: power-off failed ({error}); exiting PID 1 instead")


def run_main(devices: Devices) -> int:
    module_name, _, function_name = config.MAIN.partition(":")
    module = __import__(module_name, fromlist=[function_name])
    main = getattr(module, function_name)
    # main(devices), as apps are written; a main that takes nothing is called so.
    takes_devices = getattr(getattr(main, "__code__", None), "co_argcount", 1) > 0
    result = main(devices) if takes_devices else main()
    if hasattr(result, "__await__"):  # an async main runs on our scheduler
        from unikernel.core.scheduler import run

        async def entry() -> object:
            return await result

        result = run(entry)
    return result if isinstance(result, int) else 0


def take_arguments(arguments: list[str]) -> None:
    """A hosted app's NAME=VALUE arguments become its environment, as the kernel's command
    line becomes PID 1's under QEMU and Xen: so a launcher that can pass only arguments (a
    container's, a Linux VM's command) configures it as any other."""
    for argument in arguments:
        name, equals, value = argument.partition("=")
        if not equals or not name.isidentifier():
            raise SystemExit(f"argument {argument!r}: a hosted unikernel takes NAME=VALUE only")
        os.environ[name] = value


def main() -> None:
    booted = time.clock_gettime(time.CLOCK_BOOTTIME)
    console = Console(1)
    vm = in_vm()
    if not vm:
        take_arguments(sys.argv[1:])
    if vm:
        mount_kernel_filesystems()
        if config.MODULES:  # the generic kernel's drivers, for the app's devices
            load_kernel_modules(config.MODULES, console)
    try:
        # Wiring brings the VM's NICs up; a device that cannot be had (a hosted disk whose file
        # nobody named) ends the run before the marker, with the reason and a status.
        devices = config.devices(console)
        console.line(
            f"{READY_MARKER} boottime={booted:.6f}"
            f" ready={time.clock_gettime(time.CLOCK_BOOTTIME):.6f}"
            f" target={config.TARGET} app={config.APP}"
        )
        status = run_main(devices)
    except BaseException as exc:  # whatever the app raised becomes its exit status
        if not isinstance(exc, SystemExit):
            import traceback

            console.write("".join(traceback.format_exception(exc)).encode())
        status = lifecycle.exit_code(exc)
    report_exit(console, status)
    if vm:
        power_off(console)
    sys.exit(status)
