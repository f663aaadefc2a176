"""`bench report`: a static HTML site of the selected runs.

  - index.html: the headline of each suite (harness.report.headline), the runs, comparisons;
  - SUITE.html: the paper's figure from our samples (harness.report.seed), then every metric
    (overview bars from harness.report.bars, sweeps and CDFs from harness.report.figures), the
    runs, every result folded away, and the published tables;
  - SUITE-history.html and runs/RUN.html (harness.report.history_pages).
Every known suite gets its pages, so a dashboard has a stable shape; a suite the selected runs
hold no samples of says so plainly instead of showing anything made up. Pages are plain HTML and
images with no scripts and no external resources: they open from disk, from any web server,
offline.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd  # type: ignore[import-untyped]

from harness.compare import RunComparison, comparison_notes
from harness.model import Run, Sample
from harness.report import bars, figures, history_pages
from harness.report.headline import Headline, headlines, pairs_for
from harness.report.markup import (
    KNOWN_SUITES,
    esc,
    figure_html,
    page,
    results_table,
    runs_table,
    table,
)
from harness.report.published import ANCHORS, PublishedTable, tables_for
from harness.report.seed import SuiteData, seed_section
from harness.store import Store
from harness.summary import result_rows


def published_html(tables: Sequence[PublishedTable]) -> str:
    if not tables:
        return ""
    parts = ["<h2>Published results (not measured here)</h2>"]
    for t in tables:
        parts.append(
            f'<div class="published"><h3>{esc(t.title)}</h3>{table(t.columns, t.rows)}'
            f"<p>Source: {esc(t.source)}{'' if t.source == ANCHORS else ', via ' + ANCHORS}.</p>"
            "</div>"
        )
    return "\n".join(parts)


# A suite's page.


def suite_body(
    store: Store,
    suite: str,
    selected: Sequence[tuple[Run, list[Sample]]],
    frame: pd.DataFrame,
    headline: str,
    writer: figures.FigureWriter,
    site: Path,
) -> str:
    """The suite's page; `frame` is figures.sample_frame(selected), `headline` its headline."""
    description = KNOWN_SUITES.get(suite, ("", "a suite this report has no description of"))[1]
    parts = [f"<p>{esc(description)}.</p>"]
    if not selected:
        parts.append(
            '<p class="empty">No samples of this suite in the selected runs.</p>'
            + published_html(tables_for(suite))
        )
        return "\n".join(parts)
    if frame.empty:
        parts.append('<p class="empty">Every repeat of this suite failed: nothing to draw.</p>')
    else:
        curves = quantile_curves(store, selected)
        parts.append(headline)
        seed = seed_section(SuiteData(suite, frame, writer, curves))
        if seed.blocks:
            parts.append("<h2>What the paper showed, from our samples</h2>")
            parts.append(blocks_html(seed.blocks, site))
        parts.append("<h2>Every metric</h2>")
        parts.append(metric_figures(frame, suite, writer, site, curves, seed.covers))
    targets_of = {
        run.id: list(dict.fromkeys(s.target for s in samples)) for run, samples in selected
    }
    parts += ["<h2>Runs</h2>", runs_table([run for run, _ in selected], targets_of)]
    results = [(r, result_rows(s)) for r, s in selected]
    count = sum(len(rows) for _, rows in results)
    parts.append(
        f"<details><summary>Every result: {count} series (median, 95 % CI, n)</summary>"
        f"{results_table(results)}</details>"
    )
    parts.append(
        f'<h2>History</h2><p><a href="{esc(suite)}-history.html">Every stored run of this '
        "suite over time</a>: one chart per metric and target, the steps the regression gate "
        "found marked, each point linking to its run.</p>"
    )
    parts.append(published_html(tables_for(suite)))
    return "\n".join(parts)


def blocks_html(blocks: Sequence[str | figures.Drawn], site: Path) -> str:
    """HTML as it is; consecutive figures together in one grid."""
    out: list[str] = []
    grid: list[str] = []
    for block in [*blocks, ""]:
        if isinstance(block, figures.Drawn):
            grid.append(figure_html(block, site))
            continue
        if grid:
            out.append(f'<div class="figures">{"".join(grid)}</div>')
            grid = []
        out.append(block)
    return "\n".join(out)


def metric_figures(
    frame: pd.DataFrame,
    suite: str,
    writer: figures.FigureWriter,
    site: Path,
    curves: dict[str, list[figures.QuantileCurve]],
    covers: set[tuple[str, str | None]],
) -> str:
    """Each metric per target, against each parameter it was swept over, and as a CDF where it
    is a distribution; what the paper's section drew already is not drawn again."""
    drawn: list[figures.Drawn] = []
    # Where repeats kept their whole distribution, it alone is drawn as the CDF.
    has_distributions = bool(curves)
    for metric in dict.fromkeys(frame["metric"]):
        rows = frame[frame["metric"] == metric].dropna(axis="columns", how="all")
        if (metric, None) not in covers:
            drawn += bars.overview(writer, suite, rows)
        for param in figures.numeric_sweeps(rows):
            if (metric, param) not in covers:
                drawn += figures.against_param_figures(writer, suite, rows, param)
        if (metric, None) in covers:
            continue
        if curves.get(metric):
            drawn.append(figures.quantile_cdf(writer, suite, metric, curves[metric]))
        elif figures.is_distribution(metric) and not has_distributions:
            drawn.append(figures.cdf(writer, suite, rows))
    return blocks_html(drawn, site)


def headline_html(
    found: Sequence[Headline], unanswered: Sequence[str] = (), with_suite: bool = False
) -> str:
    """The headline ratios; for each suite in `unanswered` (it has runs, but no pair of a
    unikernel and its reference), what it would take."""
    if not found and not unanswered:
        return ""
    rows = []
    for h in found:
        arrow = "lower is better" if h.better == "lower" else "higher is better"
        row = [
            h.spec.measure,
            h.comparison,
            h.params,
            f"{h.ratio:.2f} [{h.low:.2f}, {h.high:.2f}]",
            arrow,
            h.accel,
            f"{h.n[0]} / {h.n[1]}",
        ]
        rows.append([suite_link(h.spec.suite), *map(esc, row)] if with_suite else row)
    for suite in unanswered:
        wanted = (
            "no headline: run a unikernel beside its reference ("
            + ", ".join(f"{ours} ÷ {reference}" for ours, reference in pairs_for(suite))
            + ")"
        )
        row = ["—", "—", wanted, "—", "", "", ""]
        rows.append([suite_link(suite), *map(esc, row)] if with_suite else row)
    columns = ["measure", "ours ÷ reference", "at", "ratio [95% CI]", "", "accel", "n"]
    if with_suite:
        columns.insert(0, "suite")
    return (
        '<div class="headline"><h2>Headline: the unikernel against its reference</h2>'
        + table(columns, rows, raw=with_suite)
        + "<p>Ratio of medians, ours over the reference, with a bootstrap interval resampling "
        "both; the accel each side ran under.</p></div>"
    )


def suite_link(suite: str) -> str:
    return f'<a href="{esc(suite)}.html">{esc(suite)}</a>'


def quantile_curves(
    store: Store, selected: Sequence[tuple[Run, list[Sample]]]
) -> dict[str, list[figures.QuantileCurve]]:
    """The distributions stored with the samples, one curve per series, by metric; each run's
    distributions read once."""
    grouped: dict[tuple[str, str, str, str], list[list[float]]] = {}
    accel: dict[tuple[str, str, str, str], str] = {}
    for run, _ in selected:
        for sample, quantiles in store.distributions(run.id):
            label = " ".join(
                [sample.target, *(str(v) for k, v in sorted(sample.params.items()) if k == "kind")]
            )
            key = (sample.metric, run.id, label, figures.params_label(dict(sample.params)))
            grouped.setdefault(key, []).append(quantiles)
            accel[key] = str(sample.params.get("accel", "native"))
    curves: dict[str, list[figures.QuantileCurve]] = {}
    for key, repeats in grouped.items():
        metric, run_id, label, _ = key
        curves.setdefault(metric, []).append(
            figures.QuantileCurve(
                label=label,
                run=run_id,
                accel=accel[key],
                repeats=len(repeats),
                quantiles=tuple(
                    float(statistics.median(column)) for column in zip(*repeats, strict=True)
                ),
            )
        )
    return curves


# The index page.


def comparisons_html(comparisons: Sequence[RunComparison]) -> str:
    parts = []
    for result in comparisons:
        parts.append(f"<h2>{esc(result.base.id)} (BASE) → {esc(result.new.id)} (NEW)</h2>")
        rows = []
        for c in result.comparisons:
            ratio = (
                f"{c.ratio:.3f} [{c.ratio_low:.3f}, {c.ratio_high:.3f}]"
                if math.isfinite(c.ratio)
                else "—"
            )
            rows.append(
                (
                    esc(c.suite),
                    esc(c.target),
                    esc(f"{c.metric} {'↓' if c.better == 'lower' else '↑'}"),
                    esc(figures.params_label(dict(c.params))),
                    esc(ratio),
                    esc(f"{c.p_value:.2g}"),
                    f'<span class="{c.verdict}">{c.verdict}</span>',
                    esc(c.reason),
                )
            )
        columns = ("suite", "target", "metric", "params", "ratio [95% CI]", "p", "verdict", "why")
        parts.append(table(columns, rows, raw=True))
        parts += [f"<p>{esc(note)}</p>" for note in comparison_notes(result)]
    return "\n".join(parts)


@dataclass(frozen=True)
class Site:
    pages: list[Path]
    drawn: list[figures.Drawn]

    def illegible(self) -> list[figures.Drawn]:
        return [d for d in self.drawn if d.problems]


def build_site(
    store: Store,
    run_ids: Sequence[str],
    out: Path,
    comparisons: Sequence[RunComparison] = (),
) -> Site:
    """Writes index.html and one page per suite into out; returns the pages and figures."""
    runs = list({run.id: run for run in (store.run(r) for r in run_ids)}.values())
    samples = {run.id: store.samples(run.id) for run in runs}
    in_data = [s for run in runs for s in store.suites(run.id)]
    suites = list(dict.fromkeys([*KNOWN_SUITES, *in_data]))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    drawn: list[figures.Drawn] = []
    found: list[Headline] = []
    unanswered: list[str] = []  # suites with samples but no pair to give a headline
    for suite in suites:
        selected = [
            (run, [s for s in samples[run.id] if s.suite == suite])
            for run in runs
            if suite in store.suites(run.id)
        ]
        frame = figures.sample_frame(selected)
        ours = headlines(frame, suite)
        missing = [suite] if not frame.empty and not ours and pairs_for(suite) else []
        found += ours
        unanswered += missing
        writer = figures.FigureWriter(out, suite)
        title = f"{KNOWN_SUITES.get(suite, (suite,))[0]} suite"
        body = suite_body(store, suite, selected, frame, headline_html(ours, missing), writer, out)
        path = out / f"{suite}.html"
        path.write_text(page(title, suites, body))
        written.append(path)
        drawn += writer.drawn
    linked: set[str] = set()
    for suite in suites:
        # Every suite's history (run pages link to each), up to the newest run selected of it.
        upto = max(
            (r.started for r in runs if suite in store.suites(r.id)),
            default=max(r.started for r in runs),
        )
        body, ids = history_pages.history_page(store, suite, upto)
        path = out / f"{suite}-history.html"
        path.write_text(page(f"{KNOWN_SUITES.get(suite, (suite,))[0]} history", suites, body))
        written.append(path)
        linked |= ids
    written += history_pages.write_run_pages(store, linked, out, suites)
    targets_of = {r.id: list(dict.fromkeys(s.target for s in samples[r.id])) for r in runs}
    counts = [(s, str(sum(s in store.suites(r.id) for r in runs))) for s in suites]
    index = [
        f"<p>Generated {esc(datetime.now().strftime('%Y-%m-%d %H:%M:%S'))} "
        f"from {esc(store.path)}.</p>",
        headline_html(found, unanswered, with_suite=True),
        "<h2>Selected runs</h2>",
        runs_table(runs, targets_of),
        "<h2>Suites</h2>",
        table(
            ("suite", "selected runs holding it"),
            [(f'<a href="{esc(s)}.html">{esc(s)}</a>', n) for s, n in counts],
            raw=True,
        ),
        comparisons_html(comparisons),
    ]
    (out / "index.html").write_text(page("unibench results", suites, "\n".join(index)))
    return Site([out / "index.html", *written], drawn)
