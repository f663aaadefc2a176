from harness.model import Run, Sample
from harness.summary import format_value, result_rows, run_json

RUN = Run(id="r1", started=1.0, command="bench run", metadata={"cpu_count": 2}, status="complete")


def make(target: str, metric: str, repeat: int, value: float | None, **params: int) -> Sample:
    failure = None if value is not None else "timed out after 1 s"
    return Sample("r1", "boot", target, metric, "s", "lower", params, repeat, 0.0, value, failure)


def test_rows_group_by_series_and_count_failures() -> None:
    samples = [
        make("process", "time_to_ready", 0, 0.02),
        make("docker", "time_to_ready", 0, 0.30),
        make("process", "time_to_ready", 1, 0.04),
        make("process", "time_to_ready", 2, None),
        make("process", "time_to_ready", 0, 0.5, memory=64),
    ]
    rows = result_rows(samples)
    assert [(r.target, dict(r.params)) for r in rows] == [
        ("process", {}),
        ("docker", {}),
        ("process", {"memory": 64}),
    ]
    process = rows[0]
    assert process.n == 2 and process.failed == 1
    assert process.summary is not None and process.summary.median == 0.03
    assert process.failures == ("timed out after 1 s",)


def test_all_failed_series_has_no_statistics() -> None:
    rows = result_rows([make("docker", "time_to_ready", 0, None)])
    assert rows[0].summary is None and rows[0].n == 0 and rows[0].failed == 1


def test_show_json_schema_is_stable() -> None:
    doc = run_json(RUN, result_rows([make("process", "time_to_ready", 0, 0.02)]))
    assert doc["run"] == "r1" and doc["complete"] is True and doc["metadata"] == {"cpu_count": 2}
    results = doc["results"]
    assert isinstance(results, list)
    assert set(results[0]) == {
        "suite",
        "target",
        "metric",
        "unit",
        "better",
        "params",
        "n",
        "failed",
        "median",
        "q1",
        "q3",
        "ci_low",
        "ci_high",
    }
    assert results[0]["median"] == 0.02 and results[0]["n"] == 1


def test_values_read_naturally_in_their_unit() -> None:
    assert format_value(0.0253, "s") == "25.3 ms"
    assert format_value(12.5, "s") == "12.50 s"
    assert format_value(13_310.4, "Mbit/s") == "13,310 Mbit/s"
    assert format_value(178.26, "Mbit/s") == "178.3 Mbit/s"
    assert format_value(3 * 2**20, "bytes") == "3.0 MiB"
