"""How the unikernel ends: an exit code, then power-off in a VM or a plain exit elsewhere.

Python is PID 1 in the image. If PID 1 exits, the kernel panics instead of powering off, so in a
VM the boot layer asks the kernel to power off (the reboot system call). PID 1 alone does not
prove we are in our VM: Python is PID 1 in a Docker container too, where the same call could
power off the host from a privileged container. So only an image built for a VM target (its
target is compiled in) powers off, and only as PID 1.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130  # the shells' convention for death by SIGINT

VM_TARGETS = frozenset({"qemu", "xen"})


def exit_code(error: BaseException | None) -> int:
    """The exit code for an application that ended with `error` (None: success)."""
    if error is None:
        return EXIT_OK
    if isinstance(error, SystemExit):
        if error.code is None or isinstance(error.code, int):
            return error.code or EXIT_OK
        return EXIT_FAILURE  # sys.exit("message")
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILURE


def should_power_off(pid: int, target: str) -> bool:
    """Power off only as PID 1 of an image built for a VM target; otherwise exit."""
    return pid == 1 and target in VM_TARGETS
