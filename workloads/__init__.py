"""What each suite runs inside a target, one folder per workload:

    workloads/<name>/<script>.py    the Linux program (a process, a container, a VM, a remote host)
    workloads/<name>/unikernel/     the same workload as a unikernel application (config.py + code)

Linux scripts run inside containers and VMs as well as on the host, so they use only Python's
standard library and import nothing from the harness. A suite declares the workload (its
arguments and devices) in its own file, pointing here.
"""

from pathlib import Path

WORKLOADS_DIR = Path(__file__).resolve().parent


def linux_script(workload: str, name: str) -> Path:
    """The Linux program `name` of the workload folder `workload`."""
    path = WORKLOADS_DIR / workload / name
    if not path.is_file():
        raise FileNotFoundError(f"no workload script {name} in {WORKLOADS_DIR / workload}")
    return path


def unikernel_app(workload: str) -> Path:
    """The workload folder's unikernel application."""
    folder = WORKLOADS_DIR / workload / "unikernel"
    if not (folder / "config.py").is_file():
        raise FileNotFoundError(f"no unikernel application (config.py) in {folder}")
    return folder
