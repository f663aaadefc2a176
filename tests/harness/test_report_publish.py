"""`bench report` replaces a report whole: stale images go, other files stay, and a report
interrupted or killed at any moment leaves the previous one readable, its debris removed by the
next."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.report.publish import write_site
from harness.store import Store
from tests.support.stored_runs import BOOT, DOCKER_BOOT, noisy, store_run

BENCH = str(Path(sys.executable).parent / "bench")


SERVICE = ("process", "time_to_service", "s", "lower")


def boot_store(path: Path, runs: int = 3, series_count: int = 3) -> list[str]:
    series = [BOOT, DOCKER_BOOT, SERVICE][:series_count]
    with Store(path) as store:
        for i in range(runs):
            store_run(store, f"run{i}", float(i), {s: noisy(0.03, seed=i) for s in series})
    return [f"run{i}" for i in range(runs)]


def whole(site: Path) -> None:
    """Every page there, every image and page it links to there, nothing of a build aside."""
    pages = list(site.rglob("*.html"))
    assert (site / "index.html") in pages
    for page in pages:
        text = page.read_text()
        assert text.rstrip().endswith("</html>"), page
        for src in re.findall(r'<img src="([^"]+)"', text):
            assert (page.parent / src).is_file(), (page, src)


def leftovers(site: Path) -> list[str]:
    return sorted(
        [p.name for p in site.parent.glob(f".{site.name}.partial-*")]
        + [p.name for p in site.glob(".*.old-*")]
    )


def test_a_new_report_replaces_the_old_images_and_keeps_other_files(tmp_path: Path) -> None:
    site = tmp_path / "site"
    ids = boot_store(tmp_path / "a.sqlite")
    with Store(tmp_path / "a.sqlite") as store:
        first = write_site(store, ids, site)
    (site / "nightly.json").write_text("{}")
    (site / "notes.txt").write_text("mine")
    ids = boot_store(tmp_path / "b.sqlite", runs=1, series_count=1)
    with Store(tmp_path / "b.sqlite") as store:
        second = write_site(store, ids, site)
    # Fewer figures this time: exactly the new ones are there, none of the first report's.
    assert len(second.drawn) < len(first.drawn)
    assert sorted((site / "img").iterdir()) == sorted(d.path for d in second.drawn)
    assert not (site / "runs").exists() or not any((site / "runs").iterdir())
    assert (site / "nightly.json").read_text() == "{}" and (site / "notes.txt").exists()
    assert all(p.is_file() and p.is_relative_to(site) for p in second.pages)
    whole(site)
    assert leftovers(site) == []


@pytest.mark.slow
def test_reports_interrupted_or_killed_at_random_moments_leave_the_last_one_whole(
    tmp_path: Path,
) -> None:
    store = tmp_path / "b.sqlite"
    boot_store(store)
    site = tmp_path / "site"
    command = [BENCH, "--store", str(store), "report", "--out", str(site)]
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    length = time.monotonic() - started
    whole(site)
    rng = random.Random(17)
    faults = [signal.SIGINT] * 8 + [signal.SIGTERM] * 6 + [signal.SIGKILL] * 6
    rng.shuffle(faults)
    outcomes = []
    for fault in faults:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.2, length))
        proc.send_signal(fault)
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        outcomes.append((fault.name, proc.returncode))
        # Whether it finished first or died part-way, a reader finds a whole report.
        whole(site)
        if fault == signal.SIGINT and proc.returncode != 0:
            # Interrupted in Python: it cleaned up after itself (a killed one's debris may stay
            # if the interrupt came before it began), and said nothing of a traceback.
            mine = [name for name in leftovers(site) if f".partial-{proc.pid}-" in name]
            assert mine == [], mine
            assert b"Traceback" not in err, err.decode()
    assert any(code != 0 for _, code in outcomes), outcomes  # some faults landed mid-build
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    whole(site)
    assert leftovers(site) == []  # what the killed ones left, the next report removed
