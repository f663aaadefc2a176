"""History pages: a small chart per metric and target over the stored runs, each point a link to
its run's page in runs/, from real stores with chosen values."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urljoin

import numpy as np
from matplotlib.collections import PathCollection

from harness.history import histories
from harness.report.history_pages import (
    Chart,
    history_charts,
    history_page,
    run_href,
    run_page_path,
    write_run_pages,
)
from harness.report.legibility import drawn, outline, overlap, problems
from harness.report.markup import KNOWN_SUITES, page
from harness.store import Store
from harness.summary import format_value
from tests.harness.test_report import chromium, serve
from tests.support.stored_runs import BOOT, DOCKER_BOOT, HOST, THROUGHPUT, noisy, store_run

SUITES = list(KNOWN_SUITES)
READ = ("unikernel-qemu", "read_throughput", "MiB/s", "higher")


def assert_legible(charts: list[Chart]) -> None:
    """No problem legibility finds, and the steps' labels (which it does not look at) inside
    the plot, clear of each other and of every point."""
    for chart in charts:
        assert problems(chart.figure) == [], (chart.target, chart.split)
        ax = chart.figure.axes[0]
        with drawn(chart.figure, 100) as renderer:
            labels = [outline(text, renderer) for text in ax.texts]
            (markers,) = [c for c in ax.collections if isinstance(c, PathCollection)]
            points = ax.transData.transform(markers.get_offsets())
            plot = ax.bbox
            for i, a in enumerate(labels):
                assert all(not overlap(a, b) for b in labels[i + 1 :]), ax.texts[i].get_text()
                (x0, y0), (x1, y1) = a.min(axis=0), a.max(axis=0)
                assert plot.x0 <= x0 and x1 <= plot.x1 and plot.y0 <= y0 and y1 <= plot.y1
                assert not any(x0 <= x <= x1 and y0 <= y <= y1 for x, y in points)


def boot_runs(store: Store, ids: list[str]) -> None:
    """A run a day; process boot time steps from 30 to 50 ms at the fifth run."""
    for i, run_id in enumerate(ids):
        store_run(
            store,
            run_id,
            1.7e9 + i * 86400,
            {
                BOOT: noisy(0.03 if i < 4 else 0.05, seed=i),
                DOCKER_BOOT: noisy(0.3, seed=10 + i),
                THROUGHPUT: noisy(1500, seed=20 + i),
            },
        )


def svgs(body: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", body, flags=re.DOTALL)


def test_a_chart_per_metric_and_target_and_the_steps_in_a_table(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store:
        boot_runs(store, [f"run{i}" for i in range(8)])
        body, linked = history_page(store, "boot", upto=1.7e9 + 7 * 86400)
        charts = history_charts(histories(store.series("boot")))
        early, early_linked = history_page(store, "boot", upto=1.7e9 + 5 * 86400)
    assert [(c.metric, c.target) for c in charts] == [
        ("time_to_ready", "process"),
        ("time_to_ready", "docker"),
        ("throughput", "process"),
    ]
    assert len(svgs(body)) == 3
    assert "<h2>time_to_ready (ms, lower is better)</h2>" in body
    assert "<h2>throughput (Mbit/s, higher is better)</h2>" in body
    # The steps table comes first, and names the one step and the run it started at.
    steps = body[body.index("<h2>Steps</h2>") : body.index("<svg")]
    assert steps.count("<tr>") == 2  # the header and one step
    assert "regressed from run run4: 30.0 ms → 49.9 ms (+66.3%)" in steps
    assert f'<a href="{run_href("run4")}">' in steps
    assert charts[0].caption.endswith("steps: 1 regressed")
    assert charts[1].caption.endswith("steps: none")
    assert linked == {f"run{i}" for i in range(8)}
    # Up to the sixth run, the new level has not lasted three runs: no step yet.
    assert early_linked == {f"run{i}" for i in range(6)}
    assert "No steps found" in early and "regressed from" not in early
    assert_legible(charts)


def test_every_point_links_to_its_run_page(tmp_path: Path) -> None:
    ids = [f"nightly/2024 #{i} 100%" for i in range(7)] + ["plain-id"]  # ids that need quoting
    site = tmp_path / "site"
    with Store(tmp_path / "b.sqlite") as store:
        boot_runs(store, ids)
        body, linked = history_page(store, "boot", upto=2e9)
        charts = history_charts(histories(store.series("boot")))
        pages = write_run_pages(store, linked, site, SUITES)
    assert linked == set(ids) and len(pages) == len(ids)
    for svg, chart in zip(svgs(body), charts, strict=True):
        links = re.findall(r'<a xlink:href="([^"]*)">', svg)
        assert len(links) == len(chart.points) == 8
        # Each link holds a marker (and its hover title), in the order of the points.
        marked = re.findall(r'<a xlink:href="[^"]*"><title>([^<]*)</title>\s*<g[^>]*>\s*<use ', svg)
        assert len(marked) == 8
        assert [unquote(link) for link in links] == [
            run_page_path(p.run.id) for _, p in chart.points
        ]
        assert all((site / unquote(link)).is_file() for link in links)
    assert "process: 30.1 ms (n = 10), run nightly/2024 #0 100%" in body  # a hover title
    # Inline SVG: no prolog, scales with the page, and no id repeated across the charts.
    assert "<?xml" not in body and "<!DOCTYPE" not in body and "<metadata>" not in body
    assert all(' width="100%" style="height:auto" viewBox="0 0 ' in s for s in svgs(body))
    ids_in_page = re.findall(r'\sid="([^"]+)"', body)
    assert len(ids_in_page) == len(set(ids_in_page)) > 0
    assert "svg.fonttype" not in body and "<text " in body  # text stayed text


def test_a_run_page_lists_its_samples_and_links_back(tmp_path: Path) -> None:
    values = noisy(0.031, seed=3)
    with Store(tmp_path / "b.sqlite") as store:
        store_run(
            store,
            "r1",
            1.7e9,
            {BOOT: [*values, None], THROUGHPUT: noisy(1500.0, seed=4)},
            metadata={**HOST, "hostname": "lab-7"},
        )
        store_run(store, "r2", 1.7e9 + 60, {BOOT: noisy(0.03)})
        (path,) = write_run_pages(store, ["r1"], tmp_path, SUITES)
    text = path.read_text()
    assert path == tmp_path / "runs" / "r1.html"
    assert "<h1>Run r1</h1>" in text and "lab-7, 2 CPUs" in text  # the run's facts
    assert format_value(float(np.median(values)), "s") in text
    assert format_value(float(np.median(noisy(1500.0, seed=4))), "Mbit/s") in text
    assert "<td>1</td></tr>" in text  # the failed repeat
    assert '<a href="../boot-history.html">History of boot</a>' in text
    # The nav leads back up to the site root.
    base = "http://site/runs/r1.html"
    hrefs = re.findall(r"<nav>.*?</nav>", text)[0]
    resolved = [urljoin(base, h) for h in re.findall(r'href="([^"]+)"', hrefs)]
    assert resolved[:2] == ["http://site/index.html", "http://site/boot.html"]
    # Without root, page() is as it was.
    assert '<nav><a href="index.html">Runs</a> <a href="boot.html">Boot</a>' in page(
        "t", ["boot"], ""
    )


def test_eight_parameter_sets_are_split_into_two_charts(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store:
        for i in range(3):
            for mode in ("direct", "buffered"):
                for size in (4096, 65536, 1 << 20, 4 << 20):
                    store_run(
                        store,
                        f"{mode}-{size}-{i}",
                        1.7e9 + i * 86400 + size / 1e6 + (mode == "direct") * 10,
                        {READ: noisy(size / 3000, seed=i)},
                        suite="block",
                        params={"block_size": size, "mode": mode, "seconds": 2},
                    )
        charts = history_charts(histories(store.series("block")))
        body, linked = history_page(store, "block", upto=2e9)
    assert [c.split for c in charts] == ["mode=buffered", "mode=direct"]
    assert [len(c.lines) for c in charts] == [4, 4]
    assert len(svgs(body)) == 2 and len(linked) == 24
    assert "unikernel-qemu · mode=direct" in body  # the chart's title, as text in the SVG
    for chart in charts:
        # The legend names only what differs between the lines, in numeric order.
        (legend,) = chart.figure.legends
        assert [t.get_text() for t in legend.get_texts()] == [
            "block_size=4096",
            "block_size=65536",
            "block_size=1048576",
            "block_size=4194304",
        ]
        assert "params: mode=" in chart.caption and "seconds=2" in chart.caption
    # Medians 1.4 to 1400 MiB/s: a log scale, or the small blocks would lie flat on zero.
    assert charts[0].figure.axes[0].get_yscale() == "log"
    assert_legible(charts)


def test_a_suite_with_one_run_says_history_needs_two(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store:
        store_run(store, "only", 1.7e9, {BOOT: noisy(0.03)})
        body, linked = history_page(store, "boot", upto=2e9)
        nothing, _ = history_page(store, "tcp", upto=2e9)
    assert "History needs two or more stored runs with values" in body
    assert "holds 1 run(s) of this suite" in body and "<svg" not in body
    assert linked == set()
    assert "holds 0 run(s)" in nothing


def test_crowded_charts_stay_legible(tmp_path: Path) -> None:
    """Long names, six lines on two hosts, forty runs within a minute, steps side by side."""
    target = ("a-long-target-name-for-a-unikernel-on-qemu-with-kvm", "requests", "req/s", "higher")
    with Store(tmp_path / "b.sqlite") as store:
        for i in range(40):
            for users in (1, 10, 100):
                store_run(
                    store,
                    f"r{i}-{users}",
                    float(i * 1.5 + users / 1000),
                    {target: noisy(20000 + 10 * users - (4000 if i >= 20 else 0), seed=i)},
                    suite="web",
                    params={"users": users, "app": "microblog-with-a-long-name", "seconds": 10},
                    metadata={**HOST, "hostname": "bench-1" if i % 2 else "bench-2-other"},
                )
        charts = history_charts(histories(store.series("web")))
    (chart,) = charts
    assert len(chart.lines) == 6 and sum(len(h.steps) for h in chart.lines) == 6
    ax = chart.figure.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert 2 <= len(labels) <= 4 and len(set(labels)) == len(labels)
    assert len(chart.figure.legends[0].get_texts()) == 6
    assert_legible(charts)


def test_the_pages_load_in_a_browser_and_every_link_resolves(tmp_path: Path) -> None:
    ids = [f"run {i}" for i in range(8)]
    site = tmp_path / "site"
    with Store(tmp_path / "b.sqlite") as store:
        boot_runs(store, ids)
        body, linked = history_page(store, "boot", upto=2e9)
        write_run_pages(store, linked, site, SUITES)
    (site / "boot-history.html").write_text(page("Boot history", SUITES, body))
    hrefs = set(re.findall(r'xlink:href="(runs/[^"]*)"', body))
    assert len(hrefs) == 8
    with serve(site) as base, chromium() as browser:
        for href in hrefs:  # through a real HTTP server, which decodes the path as browsers do
            with urllib.request.urlopen(f"{base}/{href}") as response:
                assert response.status == 200
        loaded = browser.check(f"{base}/boot-history.html")
        assert loaded.errors == []
        shown = browser.send(
            "Runtime.evaluate",
            {
                "expression": "JSON.stringify(Array.from(document.querySelectorAll('svg')).map("
                "s => [s.getBoundingClientRect().width, s.getBoundingClientRect().height,"
                " s.querySelectorAll('a').length]))",
                "returnByValue": True,
            },
            browser._session,
        )
        run_page = browser.check(f"{base}/{sorted(hrefs)[0]}")
    sizes = re.findall(r"\[([\d.]+),([\d.]+),(\d+)\]", shown["result"]["value"])  # type: ignore[index]
    assert len(sizes) == 3
    for width, height, links in sizes:
        # As wide as its grid column, as tall as the viewBox's proportions make it.
        assert float(width) >= 300 and abs(float(height) / float(width) - 2.4 / 3.6) < 0.02
        assert int(links) == 8
    assert run_page.errors == [] and "time_to_ready" in run_page.text
