import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.export import export, pytest_benchmark_json
from harness.model import Run, Sample

RUN = Run(
    id="20261129T120000-abcd",
    started=1_764_417_600.0,
    command="bench run --suite boot",
    metadata={
        "hostname": "h",
        "cpu_model": "cpu",
        "cpu_count": 2,
        "unibench_revision": "abc-dirty",
    },
    ended=1_764_417_700.0,
    status="complete",
)


def samples() -> list[Sample]:
    values = [0.030, 0.010, 0.020, 0.050, 0.040]
    made = [
        Sample(RUN.id, "boot", "process", "time_to_ready", "s", "lower", {}, i, 1.0 + i, v)
        for i, v in enumerate(values)
    ]
    made.append(
        Sample(RUN.id, "boot", "process", "time_to_ready", "s", "lower", {}, 5, 9.0, None, "boom")
    )
    made.append(
        Sample(
            RUN.id, "tcp", "docker", "throughput", "Mbit/s", "higher", {"flows": 10}, 0, 2.0, 940
        )
    )
    return made


def test_pytest_benchmark_layout_and_stats() -> None:
    doc = pytest_benchmark_json(RUN, samples())
    assert set(doc) >= {"machine_info", "commit_info", "benchmarks", "datetime", "version"}
    assert doc["commit_info"] == {
        "id": "abc",
        "dirty": True,
        "project": "unibench",
        "branch": None,
        "time": None,
    }
    benchmarks = doc["benchmarks"]
    assert isinstance(benchmarks, list)
    boot = benchmarks[0]
    assert boot["name"] == "boot/process/time_to_ready"
    stats = boot["stats"]
    assert stats["rounds"] == 5  # the failed repeat is counted apart, not as a round
    assert stats["median"] == pytest.approx(0.030)
    assert stats["min"] == pytest.approx(0.010) and stats["max"] == pytest.approx(0.050)
    assert stats["mean"] == pytest.approx(0.030)
    assert {"stddev", "iqr", "q1", "q3", "ops"} <= set(stats)
    assert boot["extra_info"]["failed"] == 1 and boot["extra_info"]["better"] == "lower"
    assert benchmarks[1]["params"] == {"flows": 10}
    assert benchmarks[1]["extra_info"]["better"] == "higher"


def test_pytest_benchmarks_own_compare_reads_our_file(tmp_path: Path) -> None:
    exported = tmp_path / "0001_unibench.json"
    exported.write_text(export(RUN, samples(), "pytest-benchmark"))
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "pytest-benchmark"),
            "compare",
            str(exported),
            "--columns=min,median,max,rounds",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    table = done.stdout
    assert "boot/process/time_to_ready" in table
    assert "tcp/docker/throughput[flows=10]" in table
    assert "Failed to load" not in done.stderr


def test_csv_has_one_row_per_sample_including_failures() -> None:
    rows = list(csv.DictReader(io.StringIO(export(RUN, samples(), "csv"))))
    assert len(rows) == 7
    failed = [row for row in rows if row["failure"]]
    assert len(failed) == 1 and failed[0]["value"] == "" and failed[0]["failure"] == "boom"
    assert float(rows[0]["value"]) == 0.030
    assert json.loads(rows[-1]["params"]) == {"flows": 10}


def test_json_export_keeps_every_sample() -> None:
    doc = json.loads(export(RUN, samples(), "json"))
    assert doc["run"] == RUN.id and doc["complete"] is True
    assert [s["value"] for s in doc["samples"]][:5] == [0.030, 0.010, 0.020, 0.050, 0.040]
    assert doc["samples"][5]["failure"] == "boom"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        export(RUN, samples(), "xml")
