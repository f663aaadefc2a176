"""bench report: the static site, its figures, and a real headless browser loading every page.

The browser is Debian's chromium, driven over the DevTools protocol on a pipe
(--remote-debugging-pipe: JSON messages ending in NUL on file descriptors 3 and 4), so no
WebSocket client is needed. The site is served from a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.history import histories
from harness.model import Run
from harness.report.figures import tick_label
from harness.report.history_pages import history_charts
from harness.report.legibility import problems
from harness.report.published import series_for
from harness.report.site import KNOWN_SUITES, build_site
from harness.store import Store
from tests.support import every_suite
from tests.support.programs import skip_or_fail
from tests.support.stored_runs import BOOT, HOST, invoke, noisy, sample, store_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WIDTH = 1300  # px: the desktop width pages are checked and photographed at
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def site_pages() -> list[str]:
    """A page and a history page per known suite."""
    return [f"{s}{kind}.html" for s in KNOWN_SUITES for kind in ("", "-history")]


# Figures from controlled samples: the figures that need a sweep or a distribution.


def test_a_memory_sweep_is_drawn_against_memory_beside_figure_5(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store:
        service = ("process", "time_to_service", "s", "lower")
        for i, memory in enumerate((64, 256, 1024)):
            store_run(
                store,
                f"sweep{i}",
                float(i),
                {service: noisy(0.03 + memory * 1e-5)},
                params={"memory": memory},
            )
        build_site(store, ["sweep0", "sweep1", "sweep2"], tmp_path / "site")
    boot = (tmp_path / "site" / "boot.html").read_text()
    assert "time_to_service against memory" in boot
    assert "published: MirageOS (Madhavapeddy et al., ASPLOS 2013), Figure 5" in boot
    assert "runs: sweep0, sweep1, sweep2" in boot and "process (native)" in boot
    loaded = check_site(tmp_path / "site")["boot.html"]
    assert loaded.errors == [] and len(loaded.images) == 2
    assert all(int(str(image["width"])) > 0 for image in loaded.images)


def test_xen_guests_launched_both_ways_are_drawn_side_by_side_as_figure_6(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "b.sqlite") as store:
        store.begin_run(Run(id="fig6", started=0.0, command="test", metadata=dict(HOST)))
        for target, drivers in (("unikernel-xen", "kernel"), ("unikernel-xen", "python"),
                                ("linux-xen", None)):  # fmt: skip
            for launch, toolstack in (("xl-create", 8.0), ("pre-created", 0.9)):
                params = {"launch": launch, **({"drivers": drivers} if drivers else {})}
                metrics = {"time_to_service": toolstack + 6, "guest_launch_to_kernel": toolstack}
                if launch == "pre-created":
                    metrics["phase_precreate"] = 3.0
                for metric, value in metrics.items():
                    for repeat, noise in enumerate((0.0, 0.1, 0.2)):
                        key = (target, metric, "s", "lower")
                        store.add_sample(
                            sample("fig6", "boot", key, params, repeat, 0, value + noise)
                        )
        store.end_run("fig6", 100.0, "complete")
        build_site(store, ["fig6"], tmp_path / "site")
        store_run(store, "plain", 200.0, {("process", "time_to_service", "s", "lower"): [0.1]})
        build_site(store, ["plain"], tmp_path / "plain")
    boot = (tmp_path / "site" / "boot.html").read_text()
    assert boot.count("(Fig. 6)") >= 2  # the heading and the figure
    figure = re.search(r'<img src="(img/[^"]+)" alt="[^"]*\(Fig\. 6\)"', boot)
    assert figure is not None and (tmp_path / "site" / figure[1]).stat().st_size > 0
    # The table beside it: each guest, each launch, the time building it paused took.
    assert "phase_precreate" in boot and "pre-created" in boot and "xl-create" in boot
    assert "Fig. 6" not in (tmp_path / "plain" / "boot.html").read_text()


def test_a_block_size_sweep_is_drawn_beside_the_published_plateau(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store:
        throughput = ("unikernel-qemu", "read_throughput", "MiB/s", "higher")
        for i, size in enumerate((1024, 131072, 4 << 20)):
            store_run(
                store,
                f"block{i}",
                float(i),
                {throughput: noisy(size / 3000)},
                suite="block",
                params={"block_size": size, "mode": "direct", "seconds": 2},
            )
        build_site(store, ["block0", "block1", "block2"], tmp_path / "site")
    block = (tmp_path / "site" / "block.html").read_text()
    assert "read_throughput against block_size" in block
    assert "published: MirageOS (Madhavapeddy et al., ASPLOS 2013): Mirage matches" in block
    # Parameters every line shares are said once, in the caption.
    assert "every line: mode=direct, seconds=2" in block
    # Each published level beside our reads of its own mode; both where modes are mixed.
    direct = series_for("block", "read_throughput", "block_size", {"mode": {"direct"}})
    assert [s.points[0].system for s in direct] == ["Mirage and Linux direct I/O"]
    both = series_for("block", "read_throughput", "block_size", {"mode": {"direct", "buffered"}})
    assert len(both) == 2
    assert tick_label(1024) == "1024"  # memory in MiB is no byte count
    assert [tick_label(v) for v in (10_000, 100_000, 1e6, 2e7, 12_345)] == [
        "10k",
        "100k",
        "1M",
        "20M",
        "12345",
    ]
    assert [tick_label(v, binary=True) for v in (1024, 131072, 4 << 20, 1536, 0.5)] == [
        "1K",
        "128K",
        "4M",
        "1536",
        "0.5",
    ]


def test_a_zone_size_sweep_is_drawn_beside_the_published_dns_levels(tmp_path: Path) -> None:
    with Store(tmp_path / "d.sqlite") as store:
        qps = ("unikernel-hosted", "queries_per_second", "queries/s", "higher")
        for i, names in enumerate((100, 1000, 10000)):
            store_run(
                store,
                f"dns{i}",
                float(i),
                {qps: noisy(20000 - names)},
                suite="dns",
                params={"names": names, "memoise": "on", "server": "unikernel", "seconds": 5},
            )
        build_site(store, ["dns0", "dns1", "dns2"], tmp_path / "site")
    page = (tmp_path / "site" / "dns.html").read_text()
    assert "queries_per_second against names" in page
    assert "NSD about 66k, Mirage about 40k" in page  # the published levels' source
    assert "PHP-DNS-SERVER" in page  # and the table of the rest
    assert check_site(tmp_path / "site")["dns.html"].errors == []


def test_a_sweep_with_too_many_lines_for_one_figure_is_split_by_a_parameter(
    tmp_path: Path,
) -> None:
    targets = [f"target{i}" for i in range(6)]
    run_ids = []
    with Store(tmp_path / "b.sqlite") as store:
        for mode in ("direct", "buffered"):
            for size in (4096, 65536, 1 << 20):
                run_ids.append(f"{mode}{size}")
                store_run(
                    store,
                    run_ids[-1],
                    float(len(run_ids)),
                    {
                        (t, "read_throughput", "MiB/s", "higher"): noisy(size / 5000)
                        for t in targets
                    },
                    suite="block",
                    params={"block_size": size, "mode": mode},
                )
        build_site(store, run_ids, tmp_path / "site")
    block = (tmp_path / "site" / "block.html").read_text()
    # 12 lines would repeat the palette's colours: one figure per mode, 6 lines each.
    assert block.count("read_throughput against block_size") == 2
    assert "against block_size (higher is better)\nmode=direct" in block
    assert "against block_size (higher is better)\nmode=buffered" in block


def test_a_lateness_distribution_gets_a_cdf_and_empty_suites_say_so(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store:
        lateness = ("process", "wakeup_lateness", "s", "lower")
        store_run(store, "jitter", 1.0, {lateness: noisy(50e-6, n=500)}, suite="threads")
        pages = build_site(store, ["jitter"], tmp_path / "site").pages
    # One run: no history to draw, so no run pages.
    assert {p.name for p in pages} == {"index.html", *site_pages()}
    threads = (tmp_path / "site" / "threads.html").read_text()
    assert "wakeup_lateness CDF" in threads and "Figure 7b" in threads
    assert "n = 500 per series" in threads
    for suite in ("boot", "tcp", "block", "web", "size"):
        page = (tmp_path / "site" / f"{suite}.html").read_text()
        assert "No samples of this suite in the selected runs." in page, suite
        assert "<img" not in page
    assert "1590" in (tmp_path / "site" / "tcp.html").read_text()  # Fig. 8, labelled published


def test_history_marks_steps_on_the_report(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store:
        for i in range(8):
            store_run(store, f"run{i}", float(i), {BOOT: noisy(0.03 if i < 4 else 0.05, seed=i)})
        build_site(store, ["run7"], tmp_path / "site")
    boot = (tmp_path / "site" / "boot.html").read_text()
    assert 'href="boot-history.html"' in boot
    history = (tmp_path / "site" / "boot-history.html").read_text()
    assert "time_to_ready" in history
    assert "regressed from run run4" in history


# The browser.


@dataclass
class PageCheck:
    url: str
    errors: list[str] = field(default_factory=list)
    images: list[dict[str, object]] = field(default_factory=list)
    text: str = ""
    overflow: dict[str, object] = field(default_factory=dict)

    def too_wide(self) -> list[str]:
        """The images wider than the page, and the page itself if it scrolls sideways."""
        wide = [str(e) for e in self.overflow.get("wide", [])]  # type: ignore[attr-defined]
        if int(str(self.overflow.get("page", 0))) > int(str(self.overflow.get("width", 0))):
            wide.append(f"the page ({self.overflow['page']} px in {self.overflow['width']} px)")
        return wide


class Chromium:
    """A headless chromium driven over --remote-debugging-pipe."""

    def __init__(self, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The browser reads fd 3 and writes fd 4; bash moves the pipe ends there.
        command = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}'
        self.process = subprocess.Popen(
            [
                "bash",
                "-c",
                command,
                CHROMIUM,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=(to_browser_r, from_browser_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, object]] = []

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)

    def _read_message(self, deadline: float) -> dict[str, object]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], deadline - time.time())
            if not ready:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise ConnectionError("chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, object] = json.loads(message)
        return parsed

    def send(
        self, method: str, params: Mapping[str, object] | None = None, session: str | None = None
    ) -> dict[str, object]:
        self._next_id += 1
        message: dict[str, object] = {"id": self._next_id, "method": method}
        message["params"] = dict(params or {})
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.time() + 30
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result = reply.get("result", {})
                assert isinstance(result, dict)
                return result
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while not any(
            e.get("method") == method and e.get("sessionId") == session for e in self.events
        ):
            self.events.append(self._read_message(deadline))

    def check(self, url: str) -> PageCheck:
        """Loads url in a new tab; returns its errors, its images' load state, and its text."""
        target = self.send("Target.createTarget", {"url": "about:blank"})
        attached = self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        session = str(attached["sessionId"])
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        metrics = {"width": WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False}
        self.send("Emulation.setDeviceMetricsOverride", metrics, session)
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session)
        self.wait_for("Page.loadEventFired", session)
        images = self.send(
            "Runtime.evaluate",
            {
                "expression": "JSON.stringify(Array.from(document.images).map(i => ("
                "{src: i.src, complete: i.complete, width: i.naturalWidth})))",
                "returnByValue": True,
            },
            session,
        )
        text = self.send(
            "Runtime.evaluate",
            {"expression": "document.body.innerText", "returnByValue": True},
            session,
        )
        # What sticks out past the page's width: the page itself, or any image or chart.
        overflow = self.send(
            "Runtime.evaluate",
            {
                "expression": "JSON.stringify({page: document.documentElement.scrollWidth, "
                "width: document.documentElement.clientWidth, wide: Array.from("
                "document.querySelectorAll('img, svg')).filter(e => "
                "e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)"
                ".map(e => e.getAttribute('src') || e.id || 'svg')})",
                "returnByValue": True,
            },
            session,
        )
        check = PageCheck(url, text=str(text["result"]["value"]))  # type: ignore[index]
        check.overflow = json.loads(overflow["result"]["value"])  # type: ignore[index]
        check.images = json.loads(images["result"]["value"])  # type: ignore[index]
        for event in self.events:
            if event.get("sessionId") != session:
                continue
            params = event.get("params", {})
            assert isinstance(params, dict)
            method = event.get("method")
            if method == "Runtime.exceptionThrown":
                check.errors.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                check.errors.append(f"console.{params['type']}: {params['args']}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                check.errors.append(f"log: {params['entry']['text']}")
            elif method == "Network.loadingFailed":
                check.errors.append(f"load failed: {params.get('errorText')}")
            elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
                check.errors.append(
                    f"HTTP {params['response']['status']}: {params['response']['url']}"
                )
        self._session = session
        return check

    def screenshot(self, path: Path) -> None:
        """A full-page PNG of the page last checked, at the width it was checked at."""
        shot = self.send(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True},
            self._session,
        )
        path.write_bytes(base64.b64decode(str(shot["data"])))


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def chromium() -> Iterator[Chromium]:
    if not Path(CHROMIUM).exists():
        skip_or_fail("chromium is not installed (scripts/bootstrap.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="unibench-chromium-") as profile:
        browser = Chromium(Path(profile))
        try:
            yield browser
        finally:
            browser.close()


def check_site(
    site: Path, screenshot: Path | None = None, screenshots: Path | None = None
) -> dict[str, PageCheck]:
    """Every page of the site (run pages too), loaded in the browser at WIDTH px; a screenshot
    of the boot page, or of every page into a directory, if asked."""
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    checks = {}
    with serve(site) as base, chromium() as browser:
        for name in pages:
            checks[name] = browser.check(f"{base}/{name}")
            if name == "boot.html" and screenshot:
                browser.screenshot(screenshot)
            if screenshots and "/" not in name:
                screenshots.mkdir(parents=True, exist_ok=True)
                browser.screenshot(screenshots / f"{name.removesuffix('.html')}.png")
    return checks


def test_the_report_of_real_boot_runs_loads_in_a_browser_with_every_figure(
    tmp_path: Path,
) -> None:
    store = tmp_path / "b.sqlite"
    for _ in range(2):
        code, output = invoke(
            store, "run", "--suite", "boot", "--target", "process", "--repeat", "5"
        )
        assert code == 0, output
    with Store(store) as opened:
        runs = [run.id for run in opened.runs()]
    site = tmp_path / "site"
    code, output = invoke(store, "report", *runs, "--out", str(site))
    # The index, a page and a history page per suite, and a page per run the history links.
    assert code == 0 and f"wrote {1 + len(site_pages()) + 2} pages" in output, output

    checks = check_site(site, screenshot=tmp_path / "boot.png")

    assert set(checks) == {"index.html", *site_pages(), *(f"runs/{r}.html" for r in runs)}
    for name, check in checks.items():
        assert check.errors == [], (name, check.errors)
        for image in check.images:
            assert image["complete"] and int(str(image["width"])) > 0, (name, image)
        assert check.too_wide() == [], (name, check.too_wide())
    boot = checks["boot.html"]
    # time_to_ready, time_to_service, CPU and memory: an overview each.
    assert len(boot.images) >= 4
    assert "time_to_ready" in checks["boot-history.html"].text
    # Boot has runs but no unikernel in them: the index says what a headline needs.
    assert (
        "no headline: run a unikernel beside its reference (unikernel-qemu ÷ linux-vm-minimal"
        in (checks["index.html"].text)
    )
    assert all(run in boot.text for run in runs)
    assert "process (native)" in boot.text and "n = 5 per series" in boot.text
    assert "Published results (not measured here)" in boot.text
    for suite in ("threads", "tcp", "block", "web", "size"):
        assert "No samples of this suite in the selected runs." in checks[f"{suite}.html"].text
    # The screenshot is a real PNG of a long page.
    png = (tmp_path / "boot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width >= 600 and height > 2000


def test_the_browser_check_catches_a_broken_image(tmp_path: Path) -> None:
    """The check must be able to fail: a page with a missing image and a script error."""
    (tmp_path / "index.html").write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
        '<img src="missing.png"><script>undefinedFunction()</script></body></html>'
    )
    (check,) = check_site(tmp_path).values()
    assert check.images and check.images[0]["width"] == 0
    assert any("HTTP 404" in e for e in check.errors)
    assert any("exception" in e for e in check.errors)
    assert re.search(r"undefinedFunction", " ".join(check.errors))


def test_by_default_the_report_shows_the_newest_run_of_each_suite(tmp_path: Path) -> None:
    store = tmp_path / "b.sqlite"
    lateness = ("process", "wakeup_lateness", "s", "lower")
    with Store(store) as opened:
        store_run(opened, "old-boot", 1.0, {BOOT: noisy(0.03)})
        store_run(opened, "threads", 2.0, {lateness: noisy(5e-5)}, suite="threads")
        store_run(opened, "new-boot", 3.0, {BOOT: noisy(0.03)})
    code, output = invoke(store, "report", "--out", str(tmp_path / "site"))
    assert code == 0, output
    index = (tmp_path / "site" / "index.html").read_text()
    assert "new-boot" in index and "threads" in index and "old-boot" not in index
    code, output = invoke(tmp_path / "empty.sqlite", "report", "--out", str(tmp_path / "x"))
    assert code == 1 and "no runs stored" in output


def test_a_parameter_is_a_sweep_only_where_it_varies_alone() -> None:
    import pandas as pd

    from harness.report.figures import numeric_sweeps

    by_kind = pd.DataFrame(
        {
            "target": ["process", "process"],
            "param:kind": ["asyncio", "pthread"],
            "param:count": [100000, 1000],
        }
    )
    assert numeric_sweeps(by_kind) == []
    by_memory = pd.DataFrame({"target": ["qemu", "qemu", "qemu"], "param:memory": [64, 128, 256]})
    assert numeric_sweeps(by_memory) == ["memory"]


# Every suite with its parameter sweeps: each figure legible, each page fit for a browser.

SCREENSHOTS = Path(__file__).resolve().parents[2] / "results" / "report-screenshots"


def test_every_figure_of_every_suite_is_legible_and_every_page_fits_the_browser(
    tmp_path: Path,
) -> None:
    run_ids = every_suite.fill(tmp_path / "every.sqlite")
    with Store(tmp_path / "every.sqlite") as store:
        site = build_site(store, run_ids, tmp_path / "site")
    # Ticks that overlap, text cut off at an edge, series without a legend: none, anywhere.
    assert len(site.drawn) > 60
    assert [(d.path.name, d.problems) for d in site.illegible()] == []
    with Store(tmp_path / "every.sqlite") as store:  # and the history pages' small charts
        charts = [c for s in KNOWN_SUITES for c in history_charts(histories(store.series(s)))]
    assert len(charts) > 30
    assert [(c.metric, c.target, problems(c.figure)) for c in charts if problems(c.figure)] == []
    index = (tmp_path / "site" / "index.html").read_text()
    for suite in KNOWN_SUITES:  # a headline ratio for every suite that has runs
        assert f'<td><a href="{suite}.html">{suite}</a></td>' in index, suite
    checks = check_site(tmp_path / "site", screenshots=SCREENSHOTS)
    for name, check in checks.items():
        assert check.errors == [], (name, check.errors)
        assert check.too_wide() == [], (name, check.too_wide())
        for image in check.images:
            assert image["complete"] and int(str(image["width"])) > 0, (name, image)
    for suite in KNOWN_SUITES:
        assert "What the paper showed, from our samples" in checks[f"{suite}.html"].text
        assert (SCREENSHOTS / f"{suite}.png").stat().st_size > 10_000
    tcp = checks["tcp.html"].text
    # The seed's table: every path, its ratio to Linux <-> Linux, Fig. 8 labelled published.
    assert "Linux → unikernel-hosted" in tcp and "unikernel-hosted → Linux" in tcp
    assert "published: Linux → Mirage" in tcp and "(x0.09)" in tcp
    size = checks["size.html"].text
    # Table 2's shape: per appliance, standard against pruned, and the ratio.
    assert re.search(r"dns\s+unikernel-qemu\s+62\.400\s+32\.400\s+0\.52", size), size[:3000]


def test_the_checks_see_an_illegible_figure_and_a_page_too_wide(tmp_path: Path) -> None:
    """Both checks can fail: 40 long tick labels on one axis, an image wider than the page."""
    from matplotlib.figure import Figure

    from harness.report.figures import FigureWriter

    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    ax.bar(range(40), range(40), tick_label=[f"unikernel-qemu-{i}" for i in range(40)])
    drawn = FigureWriter(tmp_path, "bad").save(fig, "bad", "caption")
    assert any("overlap" in p for p in drawn.problems)
    (tmp_path / "index.html").write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
        '<img src="img/bad-01.png" style="width: 3000px"></body></html>'
    )
    (check,) = check_site(tmp_path).values()
    assert "img/bad-01.png" in check.too_wide()


def test_headlines_pair_each_unikernel_with_its_reference(tmp_path: Path) -> None:
    from harness.report.figures import sample_frame
    from harness.report.headline import headlines

    run_ids = every_suite.fill(tmp_path / "every.sqlite", runs_per_suite=1)
    with Store(tmp_path / "every.sqlite") as store:
        frames = {
            run.id.split("-")[0]: sample_frame([(run, store.samples(run.id))])
            for run in (store.run(r) for r in run_ids)
        }
    found = {h.spec.measure: h for suite, f in frames.items() for h in headlines(f, suite)}
    tcp = found["TCP receive, offloads off"]
    # The hosted unikernel beside Linux on a veth link, same direction, flows and offloads.
    assert (tcp.ours, tcp.reference) == ("unikernel-hosted", "linux-veth")
    assert tcp.params == "direction=to-target offloads=off flows=1"
    assert 0.07 < tcp.low <= tcp.ratio <= tcp.high < 0.11 and tcp.accel == "native"
    dns = found["DNS queries/s against NSD"]
    # The VM pair comes first; each side at its own server, at one zone size.
    assert (dns.ours, dns.reference) == ("unikernel-qemu", "linux-vm")
    assert "server=unikernel" in dns.params and "server (reference)=nsd" in dns.params
    assert 0.12 < dns.ratio < 0.15 and dns.accel == "tcg"
    size = found["Image size, pruned"]
    # Table 2's DNS appliance, pruned, against the minimal Linux VM: deterministic, no interval.
    assert size.params == "app=dns build=pruned"
    assert size.ratio == pytest.approx(27e6 / 70e6) and size.low == size.high
    web = found["Static web sessions/s against Apache2"]
    assert web.reference == "linux-vm" and "server (reference)=apache2" in web.params
    # Nothing to compare with: no headline rather than a made-up one.
    assert (
        headlines(frames["tcp"].query("target != 'linux-veth' and target != 'process'"), "tcp")
        == []
    )
