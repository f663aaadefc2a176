"""Random reads over a disk with Debian's fio, reported as the unikernel's appliance reports them.

fio does what the appliance does: `randread` at block-aligned random offsets over the whole
device for a time, `depth` reads in flight. fio cannot check every block of a timed run: with
`--verify` it reads each block once and stops, and its checksums cost more CPU than the reads
(570 against 2,400 MiB/s here). So a short pass of random blocks first (VERIFIED_READS, or as
many as make VERIFIED_BYTES: MD5 under an emulated CPU is slow) checks
them against the verify headers the data was written with (a wrong device or a blank one is a
bad block, never a fast run), then the timed run measures as Linux users measure. Direct
mode is fio's libaio engine on O_DIRECT, the way Linux users measure devices; buffered mode is
`depth` psync jobs through the page cache (libaio without O_DIRECT would wait in io_submit).

Prints, as the appliance does:
    UNIBENCH-RESULT mib_per_s=... iops=... lat_p50=... lat_p99=... reads=... bad_blocks=...
Runs inside containers and VMs as well as on the host: standard library only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

EILSEQ = 84  # what fio's job reports when a block fails its verify header


EILSEQ = 84  # what fio's job reports when a block fails its verify header
VERIFIED_READS = 256
VERIFIED_BYTES = 64 << 20


def fio_argv(
    device: str, block_size: int, depth: int, seconds: float, mode: str, verify: bool
) -> list[str]:
    argv = [
        "fio",
        "--name=randread",
        f"--filename={device}",
        "--rw=randread",
        f"--bs={block_size}",
        "--readonly",
        "--lat_percentiles=1",
        "--group_reporting",
        "--output-format=json",
    ]
    if verify:
        # 1024: the unit the data was stamped in
        reads = max(8, min(VERIFIED_READS, VERIFIED_BYTES // block_size))
        argv += ["--verify=md5", "--verify_interval=1024", f"--number_ios={reads}"]
        argv.append("--verify_state_save=0")  # else a failed check leaves a file in the cwd
    else:
        argv += ["--time_based", f"--runtime={seconds}s"]
    if mode == "direct":
        argv += ["--ioengine=libaio", "--direct=1", f"--iodepth={depth}"]
    elif mode == "buffered":
        argv += ["--ioengine=psync", "--direct=0", f"--numjobs={depth}"]
    else:
        raise SystemExit(f"--mode {mode}: say direct or buffered")
    return argv


def run_fio(argv: list[str]) -> dict[str, Any] | None:
    """fio's JSON report, or None (having said why) if it made none."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.stderr.strip():
        print(f"block-read: fio says: {done.stderr.strip()[-800:]}", flush=True)
    try:
        report = json.loads(done.stdout[done.stdout.find("{") :])
    except json.JSONDecodeError:
        print(f"block-read: fio exited with {done.returncode} and no report", flush=True)
        return None
    return report if isinstance(report, dict) else None


def bad_blocks(report: dict[str, Any]) -> int:
    return sum(1 for job in report["jobs"] if job.get("error") == EILSEQ)


def result_line(report: dict[str, Any], bad: int) -> str:
    read = report["jobs"][0]["read"]
    percentiles = read["lat_ns"].get("percentile", {})
    p50 = percentiles.get("50.000000", 0) / 1e9
    p99 = percentiles.get("99.000000", 0) / 1e9
    seconds = read["runtime"] / 1000 or 1e-9
    return (
        f"UNIBENCH-RESULT mib_per_s={read['io_bytes'] / seconds / 2**20:.3f} "
        f"iops={read['total_ios'] / seconds:.1f} lat_p50={p50:.9f} lat_p99={p99:.9f} "
        f"reads={read['total_ios']} bad_blocks={bad}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", required=True)
    parser.add_argument("--block-size", type=int, required=True)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--mode", default="direct")
    args = parser.parse_args()
    shape = (args.device, args.block_size, args.depth, args.seconds, args.mode)
    checked = run_fio(fio_argv(*shape, verify=True))
    if checked is None:
        return 1
    bad = bad_blocks(checked)
    measured = run_fio(fio_argv(*shape, verify=False))
    if measured is None or measured["jobs"][0].get("error"):
        return 1
    print(result_line(measured, bad), flush=True)
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
