"""What each suite runs inside a target: small programs and their Linux counterparts.

Scripts here run inside containers and VMs as well as on the host, so they use only Python's
standard library and import nothing from the harness.
"""

from pathlib import Path

WORKLOADS_DIR = Path(__file__).resolve().parent


def script(name: str) -> Path:
    path = WORKLOADS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"no workload script {name} in {WORKLOADS_DIR}")
    return path
