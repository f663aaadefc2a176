"""bench nightly: runs the configured jobs, compares with the last good run, writes the report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from harness.nightly import ConfigError, last_good_run, load_config
from harness.store import Store
from tests.support.stored_runs import BOOT, DOCKER_BOOT, HOST, invoke, noisy, store_run


def write_config(tmp_path: Path, jobs: str, **top: str) -> Path:
    path = tmp_path / "nightly.toml"
    settings = "".join(f"{key} = {value}\n" for key, value in top.items())
    path.write_text(f'store = "b.sqlite"\nreport_dir = "site"\n{settings}\n{jobs}')
    return path


PROCESS_JOB = '[[job]]\nsuite = "boot"\ntargets = ["process"]\nrepeat = 5\n'


def test_config_is_read_relative_to_its_file_and_checked(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, PROCESS_JOB, threshold='"10%"', alpha="0.001"))
    (job,) = config.jobs
    assert job.suite == "boot" and job.targets == ("process",) and job.settings.repeat == 5
    assert config.store == tmp_path / "b.sqlite" and config.report_dir == tmp_path / "site"
    assert config.threshold == pytest.approx(0.10) and config.alpha == 0.001
    with pytest.raises(ConfigError, match="suite 'bot' is not one of"):
        load_config(write_config(tmp_path, '[[job]]\nsuite = "bot"\ntargets = ["process"]\n'))
    with pytest.raises(ConfigError, match="unknown targets \\['vmware'\\]"):
        load_config(write_config(tmp_path, '[[job]]\nsuite = "boot"\ntargets = ["vmware"]\n'))
    with pytest.raises(ConfigError, match="no \\[\\[job\\]\\] listed"):
        load_config(write_config(tmp_path, ""))


def test_the_last_good_run_skips_regressed_incomplete_and_incomparable_runs(
    tmp_path: Path,
) -> None:
    other_host = {**HOST, "hostname": "bench-2"}
    judged_bad = {**HOST, "nightly": {"baseline": "good", "regressed": ["boot process ..."]}}
    judged_fine = {**HOST, "nightly": {"baseline": None, "regressed": []}}
    values = {BOOT: noisy(0.03)}
    with Store(tmp_path / "b.sqlite") as store:
        store_run(store, "older-good", 1.0, values)
        store_run(store, "good", 2.0, values, metadata=judged_fine)
        store_run(store, "regressed", 3.0, values, metadata=judged_bad)
        store_run(store, "interrupted", 4.0, values, status="interrupted")
        store_run(store, "elsewhere", 5.0, values, metadata=other_host)
        store_run(store, "more-targets", 6.0, {**values, DOCKER_BOOT: noisy(0.5)})
        store_run(store, "other-params", 7.0, values, params={"memory": 64})
        new = store_run(store, "new", 8.0, values)
        assert (baseline := last_good_run(store, new, "boot")) is not None
        assert baseline.id == "good"
        first = store.run("older-good")
        assert last_good_run(store, first, "boot") is None


def test_nightly_runs_compares_reports_and_fails_on_regression(tmp_path: Path) -> None:
    config = write_config(tmp_path, PROCESS_JOB)
    store_path, site = tmp_path / "b.sqlite", tmp_path / "site"

    # First night: nothing to compare with; this run becomes the baseline.
    code, output = invoke(store_path, "nightly", str(config))
    assert code == 0, output
    assert "no earlier good run" in output
    first = json.loads((site / "nightly.json").read_text())["jobs"][0]
    assert first["baseline"] is None and first["comparison"] is None
    assert (site / "index.html").exists() and (site / "boot.html").exists()

    # A baseline measured on this machine where boot took a hundredth of the time: tonight's
    # real runs must be flagged as regressed against it.
    with Store(store_path) as store:
        metadata = store.run(first["run"]).metadata
        del metadata["nightly"]
        store_run(store, "fast", time.time(), {BOOT: noisy(0.0003, seed=1)}, metadata=metadata)
    code, output = invoke(store_path, "nightly", str(config))
    assert code == 1, output
    second = json.loads((site / "nightly.json").read_text())["jobs"][0]
    assert second["baseline"] == "fast"
    (ready,) = [c for c in second["comparison"]["comparisons"] if c["metric"] == "time_to_ready"]
    assert ready["verdict"] == "regressed" and ready["ratio"] > 10
    assert "regressed" in (site / "index.html").read_text()
    with Store(store_path) as store:
        verdict = store.run(second["run"]).metadata["nightly"]
    assert verdict == {
        "config": str(config),
        "baseline": "fast",
        "regressed": ["boot process time_to_ready"],
    }

    # Third night: the regressed run is no baseline; it is still measured against "fast".
    code, output = invoke(store_path, "nightly", str(config))
    third = json.loads((site / "nightly.json").read_text())["jobs"][0]
    assert code == 1 and third["baseline"] == "fast"
