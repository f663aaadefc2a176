"""The `xl` configuration that starts an image as a Xen PVH guest.

PVH boots the same vmlinux QEMU boots (its PVH entry note), with the initramfs inside it; the
console is Xen's (hvc0), and a guest that powers off or crashes is destroyed, so `xl create` to
the end of the guest's life is one boot, as the harness measures it.
"""

from __future__ import annotations

from pathlib import Path

KERNEL_ARGS = (
    "console=hvc0",
    "panic=-1",
    "quiet",
    "random.trust_cpu=on",
    "UNIKERNEL_TARGET=xen",
)


def xl_config(
    name: str, kernel: Path, memory_mib: int, vcpus: int = 1, extra_args: tuple[str, ...] = ()
) -> str:
    cmdline = " ".join((*KERNEL_ARGS, *extra_args))
    return "\n".join(
        [
            f'name = "{name}"',
            'type = "pvh"',
            f'kernel = "{kernel}"',
            f"memory = {memory_mib}",
            f"vcpus = {vcpus}",
            f'cmdline = "{cmdline}"',
            'on_poweroff = "destroy"',
            'on_reboot = "destroy"',
            'on_crash = "destroy"',
            "",
        ]
    )
