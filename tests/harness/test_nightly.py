"""bench nightly: runs the configured jobs, compares with the last good run, writes the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.gate import MIN_HISTORY, NOISE_FACTOR, is_deterministic
from harness.model import Run
from harness.nightly import (
    ConfigError,
    Job,
    blind_jobs,
    cpu_stalled,
    last_good_run,
    load_config,
)
from harness.stats import repeats_to_detect
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
    # Parameters are checked as `bench run --param` checks them, before a night begins.
    bad_value = '[[job]]\nsuite = "boot"\ntargets = ["process"]\nparams = { memory = ["abc"] }\n'
    with pytest.raises(ConfigError, match="memory=abc: memory takes a whole number of MiB"):
        load_config(write_config(tmp_path, bad_value))
    unknown = '[[job]]\nsuite = "boot"\ntargets = ["process"]\nparams = { memroy = [64] }\n'
    with pytest.raises(ConfigError, match="unknown parameter memroy: the boot suite takes memory"):
        load_config(write_config(tmp_path, unknown))


def test_the_last_good_run_skips_regressed_incomplete_and_incomparable_runs(
    tmp_path: Path,
) -> None:
    other_host = {**HOST, "hostname": "bench-2"}
    judged_bad = {**HOST, "nightly": {"baseline": "good", "regressed": ["boot process ..."]}}
    judged_fine = {**HOST, "nightly": {"baseline": None, "regressed": [], "busier": []}}
    too_busy = {**HOST, "nightly": {"baseline": "good", "regressed": [], "busier": ["boot ..."]}}
    values = {BOOT: noisy(0.03)}
    with Store(tmp_path / "b.sqlite") as store:
        store_run(store, "older-good", 1.0, values)
        store_run(store, "good", 2.0, values, metadata=judged_fine)
        store_run(store, "regressed", 3.0, values, metadata=judged_bad)
        store_run(store, "busy", 3.5, values, metadata=too_busy)
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

    # Baselines measured on this machine where boot took a hundredth of the time, enough of
    # them to judge by (MIN_HISTORY): tonight's real runs must be flagged as regressed.
    with Store(store_path) as store:
        measured = store.run(first["run"])
        metadata = measured.metadata
        del metadata["nightly"]
        metadata.pop("cpu_pressure", None)  # that machine's load is not known
        for night in range(MIN_HISTORY):  # after the first night, before the next
            values = {BOOT: noisy(0.0003, seed=night)}
            started = measured.started + 0.001 * (night + 1)
            store_run(store, f"fast{night}", started, values, metadata=metadata)
    fast = f"fast{MIN_HISTORY - 1}"
    code, output = invoke(store_path, "nightly", str(config))
    assert code == 1, output
    second = json.loads((site / "nightly.json").read_text())["jobs"][0]
    assert second["baseline"] == fast
    (ready,) = [c for c in second["comparison"]["comparisons"] if c["metric"] == "time_to_ready"]
    assert ready["verdict"] == "regressed" and ready["ratio"] > 10
    assert "regressed" in (site / "index.html").read_text()
    with Store(store_path) as store:
        verdict = store.run(second["run"]).metadata["nightly"]
    assert verdict == {
        "config": str(config),
        "baseline": fast,
        "regressed": ["boot process time_to_ready"],
        "busier": [],
        "early": [],
    }

    # Third night: the regressed run is no baseline; it is still measured against "fast".
    code, output = invoke(store_path, "nightly", str(config))
    third = json.loads((site / "nightly.json").read_text())["jobs"][0]
    assert code == 1 and third["baseline"] == fast


SHIPPED = Path(__file__).resolve().parents[2] / "nightly.toml"


def test_a_job_too_few_repeats_to_ever_flag_is_refused_before_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def measure(*_: object) -> None:
        raise AssertionError("measured despite a refused configuration")

    monkeypatch.setattr("harness.nightly.measure_job", measure)
    jobs = (
        '[[job]]\nsuite = "size"\ntargets = ["docker"]\nrepeat = 1\n'  # deterministic: fine
        '[[job]]\nsuite = "tcp"\ntargets = ["process", "docker"]\nrepeat = 3\n'
        '[[job]]\nsuite = "boot"\ntargets = ["process"]\nrepeat = 4\n'
    )
    config = write_config(tmp_path, jobs, alpha="0.01")
    code, output = invoke(tmp_path / "b.sqlite", "nightly", str(config))
    assert code == 2, output
    lines = [" ".join(line.split()) for line in output.split("error:")[1:]]
    assert len(lines) == 2, output
    assert "[[job]] 2 (suite tcp on process, docker): repeat = 3 can never flag" in lines[0]
    assert "smallest p a two-sided permutation test can give is 0.1" in lines[0]
    assert "the tcp suite needs repeat = 5 or more" in lines[0]
    assert "[[job]] 3 (suite boot on process): repeat = 4" in lines[1] and "0.029" in lines[1]
    assert not (tmp_path / "b.sqlite").exists()
    # At alpha 0.05, 4 repeats can: 2 / C(8, 4) = 0.029.
    config = write_config(tmp_path, jobs.replace("repeat = 3", "repeat = 4"), alpha="0.05")
    assert blind_jobs(load_config(config)) == []
    with pytest.raises(ConfigError, match="alpha = 0: give a significance level"):
        load_config(write_config(tmp_path, PROCESS_JOB, alpha="0"))


def test_the_shipped_configuration_can_see_a_five_percent_change() -> None:
    config = load_config(SHIPPED)
    assert blind_jobs(config) == []
    # Where the noise floor lets a 5 % change through (repeats spreading under 5 % / 3), the
    # test has the repeats to find it.
    widest = config.threshold / NOISE_FACTOR
    for job in config.jobs:
        if not is_deterministic(job.suite):
            needed = repeats_to_detect(config.threshold, widest, config.alpha)
            assert job.settings.repeat >= needed, job


TCP_KEY = ("unikernel-hosted", "throughput", "Mbit/s", "higher")
IMAGE_KEY = ("unikernel-qemu", "size_image", "bytes", "lower")


def synthetic_night(store: Store, job: Job, night: int, regressed: bool) -> Run:
    """A run of the job as the shipped configuration asks for it, with made-up values: every
    target's throughput, spreading 1.5 % (the median spread of this machine's quiet tcp runs),
    or its image size; `regressed`: unikernel-hosted's throughput 10 % down, unikernel-qemu's
    image a byte larger."""
    n = job.settings.repeat
    series: dict[tuple[str, str, str, str], list[float | None]] = {}
    for i, target in enumerate(job.targets):
        if job.suite == "tcp":
            key = (target, "throughput", "Mbit/s", "higher")
            level = 1000.0 * (0.9 if regressed and key == TCP_KEY else 1.0)
            series[key] = list(noisy(level, n=n, spread=0.015, seed=100 * night + i))
        else:
            key = (target, "size_image", "bytes", "lower")
            series[key] = [5e6 + i + (1 if regressed and key == IMAGE_KEY else 0)] * n
    run_id = f"{job.suite}-{night}"
    return store_run(store, run_id, 1000.0 * night, series, suite=job.suite)


def test_a_ten_percent_throughput_drop_and_a_grown_image_fail_the_night(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = load_config(SHIPPED)
    jobs = [j for j in shipped.jobs if j.suite in ("tcp", "size")]
    assert [j.settings.repeat for j in jobs] == [10, 1]  # what nightly.toml asks for
    last = MIN_HISTORY + 1  # the nights before it measure how far the series move
    nights = iter(night for night in range(1, last + 1) for _ in jobs)

    def measure(store: Store, job: Job, _config: object) -> Run:
        night = next(nights)
        return synthetic_night(store, job, night, regressed=night == last)

    monkeypatch.setattr("harness.nightly.measure_job", measure)
    text = "".join(
        f'[[job]]\nsuite = "{j.suite}"\ntargets = {list(j.targets)!r}\n'
        f"repeat = {j.settings.repeat}\n".replace("'", '"')
        for j in jobs
    )
    config = write_config(tmp_path, text, threshold='"5%"', alpha="0.01")
    store_path, site = tmp_path / "b.sqlite", tmp_path / "site"
    code, output = invoke(store_path, "nightly", str(config))
    assert code == 0 and output.count("no earlier good run") == 2, output
    for _ in range(2, last):
        code, output = invoke(store_path, "nightly", str(config))
        assert code == 0, output
    code, output = invoke(store_path, "nightly", str(config))
    assert code == 1, output
    report = json.loads((site / "nightly.json").read_text())["jobs"]
    regressed = {
        c["target"]: c["metric"]
        for job in report
        for c in job["comparison"]["comparisons"]
        if c["verdict"] == "regressed"
    }
    assert regressed == {"unikernel-hosted": "throughput", "unikernel-qemu": "size_image"}
    tcp_gate = report[0]["gate"]["tcp unikernel-hosted throughput"]
    assert tcp_gate["change"] == pytest.approx(-0.1, abs=0.02) and tcp_gate["p_value"] < 0.01
    assert report[1]["gate"]["size unikernel-qemu size_image"]["deterministic"] is True


def test_the_cpu_pressure_is_read_from_linux_psi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    psi = tmp_path / "cpu"
    psi.write_text(
        "some avg10=1.00 avg60=0.50 avg300=0.10 total=2500000\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )
    monkeypatch.setattr("harness.nightly.PRESSURE", psi)
    assert cpu_stalled() == pytest.approx(2.5)
    monkeypatch.setattr("harness.nightly.PRESSURE", tmp_path / "absent")
    assert cpu_stalled() is None


def test_a_slowdown_on_a_busier_night_waits_for_a_quieter_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nights 1 to 5 quiet (the history); night 6 everything 50 % slower under load: not
    # judged, and no baseline; night 7 as slow on a quiet machine: a regression, against 5.
    quiet = MIN_HISTORY
    nights = {night: (1.0, 0.05) for night in range(1, quiet + 1)}
    nights |= {quiet + 1: (1.5, 0.70), quiet + 2: (1.5, 0.05)}
    counter = iter(nights)

    def measure(store: Store, job: Job, _config: object) -> Run:
        night = next(counter)
        slower, pressure = nights[night]
        values = {BOOT: noisy(0.030 * slower, spread=0.01, seed=night)}
        metadata = {**HOST, "cpu_pressure": pressure}
        return store_run(store, f"night{night}", float(night), values, metadata=metadata)

    monkeypatch.setattr("harness.nightly.measure_job", measure)
    config = write_config(tmp_path, PROCESS_JOB.replace("repeat = 5", "repeat = 10"))
    store_path, site = tmp_path / "b.sqlite", tmp_path / "site"
    for _ in range(quiet):
        assert invoke(store_path, "nightly", str(config))[0] == 0
    code, output = invoke(store_path, "nightly", str(config))
    assert code == 0 and "not judged, the machine was busier" in output, output
    with Store(store_path) as store:
        verdict = store.run(f"night{quiet + 1}").metadata["nightly"]
    assert verdict["regressed"] == [] and verdict["busier"] == ["boot process time_to_ready"]
    code, output = invoke(store_path, "nightly", str(config))
    assert code == 1, output
    third = json.loads((site / "nightly.json").read_text())["jobs"][0]
    assert third["baseline"] == f"night{quiet}"
    assert third["gate"]["boot process time_to_ready"]["verdict"] == "regressed"


def test_a_slowdown_before_the_history_can_judge_it_is_said_and_not_flagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run-to-run shifts of a whole run are this machine's noise (+46 % seen back to back on
    an idle machine): with one night of history, the gate cannot tell them from a regression."""
    slower = {1: 1.0, 2: 1.5, 3: 1.0}

    def measure(store: Store, job: Job, _config: object) -> Run:
        night = len(store.runs()) + 1
        values = {BOOT: noisy(0.030 * slower[night], spread=0.01, seed=night)}
        return store_run(store, f"night{night}", float(night), values, metadata=HOST)

    monkeypatch.setattr("harness.nightly.measure_job", measure)
    config = write_config(tmp_path, PROCESS_JOB.replace("repeat = 5", "repeat = 10"))
    store_path = tmp_path / "b.sqlite"
    assert invoke(store_path, "nightly", str(config))[0] == 0
    code, output = invoke(store_path, "nightly", str(config))
    assert code == 0 and "not judged yet" in output, output
    with Store(store_path) as store:
        verdict = store.run("night2").metadata["nightly"]
    assert verdict["regressed"] == [] and verdict["early"] == ["boot process time_to_ready"]
    # Still a good run: the history grows with it, and it is tonight's baseline.
    assert invoke(store_path, "nightly", str(config))[0] == 0
    with Store(store_path) as store:
        assert store.run("night3").metadata["nightly"]["baseline"] == "night2"
