"""The report's HTML building blocks: the page frame, tables, figures and the runs table.

Pages are plain HTML with no scripts and no external resources, so a site opens from disk, from
any web server, offline.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from harness.compare import target_accel
from harness.model import Run
from harness.report.figures import Drawn, params_label
from harness.summary import ResultRow, format_value

KNOWN_SUITES = {
    "boot": ("Boot", "launch call to the ready marker and to the first reply to a host probe"),
    "threads": ("Threads", "thread creation, and timer jitter as a CDF of wake-up lateness"),
    "tcp": ("TCP", "bulk transfer throughput by flows and direction"),
    "block": ("Block", "random read throughput against block size"),
    "dns": ("DNS", "authoritative queries per second against zone size"),
    "web": ("Web", "requests and sessions per second, and latency, against users"),
    "size": ("Size", "image sizes per appliance, standard and pruned"),
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
nav a { margin-right: 1em; } nav { border-bottom: 1px solid #ccc; padding-bottom: .5em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: .9em; }
td, th { border: 1px solid #ddd; padding: .2em .6em; text-align: left; }
th { background: #f3f3f3; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(32em, 1fr)); gap: 1em; }
figure { margin: 0 0 1.5em; } figure img { max-width: 100%; height: auto; }
figure.wide { grid-column: 1 / -1; }
.small-multiples { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr));
  gap: 1em; }
details { margin: .5em 0 1.5em; } summary { cursor: pointer; font-weight: bold; }
.headline table { font-size: 1em; }
figcaption { font-size: .85em; color: #555; }
.empty { padding: 1em; background: #fff8e1; border: 1px solid #f0d98c; }
.published { border-left: 4px solid #888; padding-left: 1em; }
.regressed { color: #b00020; font-weight: bold; } .improved { color: #1b7a1b; }
"""


def esc(value: object) -> str:
    return html.escape(str(value))


def page(title: str, suites: Iterable[str], body: str, root: str = "") -> str:
    """A whole page; root leads from the page's directory to the site's ("../" for runs/)."""
    links = " ".join(
        f'<a href="{esc(root)}{esc(s)}.html">{esc(KNOWN_SUITES.get(s, (s,))[0])}</a>'
        for s in suites
    )
    return (
        # The empty icon spares the browser a request for /favicon.ico that would fail.
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n"
        f'<body><nav><a href="{esc(root)}index.html">Runs</a> {links}</nav>\n'
        f"<h1>{esc(title)}</h1>\n{body}\n</body></html>\n"
    )


def table(columns: Sequence[str], rows: Iterable[Sequence[str]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless raw (when the caller built the markup)."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell if raw else esc(cell)}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def when(run: Run) -> str:
    return datetime.fromtimestamp(run.started).strftime("%Y-%m-%d %H:%M:%S")


def runs_table(runs: Sequence[Run], targets_of: dict[str, list[str]]) -> str:
    rows = []
    for run in runs:
        targets = ", ".join(
            f"{t} ({target_accel(run, t) or 'unknown'})" for t in targets_of[run.id]
        )
        host = f"{run.metadata.get('hostname')}, {run.metadata.get('cpu_count')} CPUs"
        rows.append((run.id, when(run), run.status, host, targets, run.command))
    return table(("run", "started", "status", "host", "targets (accel)", "command"), rows)


WIDE = 900  # pixels: a figure wider than this spans the whole grid rather than one cell


def figure_html(drawn: Drawn, site: Path) -> str:
    src = drawn.path.relative_to(site).as_posix()
    wide = ' class="wide"' if drawn.width > WIDE else ""
    size = f' width="{drawn.width}" height="{drawn.height}"' if drawn.width else ""
    return (
        f'<figure{wide}><img src="{esc(src)}" alt="{esc(drawn.title)}"{size}>'
        f"<figcaption>{esc(drawn.caption)}</figcaption></figure>"
    )


def results_table(rows_by_run: Sequence[tuple[Run, list[ResultRow]]]) -> str:
    rows = []
    for run, results in rows_by_run:
        for r in results:
            s = r.summary
            rows.append(
                (
                    run.id,
                    r.target,
                    f"{r.metric} {'↓' if r.better == 'lower' else '↑'}",
                    params_label(dict(r.params)),
                    format_value(s.median, r.unit) if s else "failed",
                    f"{format_value(s.ci_low, r.unit)} .. {format_value(s.ci_high, r.unit)}"
                    if s
                    else "",
                    str(r.n),
                    str(r.failed or ""),
                )
            )
    columns = ("run", "target", "metric", "params", "median", "95% CI", "n", "failed")
    return table(columns, rows)
