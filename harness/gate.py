"""The nightly regression gate: whether tonight's run differs from its baseline by a regression,
or by noise.

Built after Firecracker's A/B tests (tools/ab_test.py): a series is flagged only when
  - the change is significant: a two-sided permutation test of the rank sum at `alpha`
    (stats.permutation_p); ranks, so one wild repeat cannot carry it,
  - the median moved in the metric's bad direction by more than the minimum effect, the larger
    of the threshold (5 %) and the noise floor: NOISE_FACTOR (3) times the noise, the larger of
      - the spread of single repeats within each of the two runs (stats.relative_spread: the
        scaled median absolute deviation, or the measurement's resolution), the new run's too:
        a loaded machine spreads the run it loads, and shifts it;
      - the night-to-night noise: the spread of the change of the series' median from one good
        run to the next, over the baseline and the good runs before it (when there are at least
        MIN_HISTORY). This is what Firecracker's interleaving of A and B on one machine cancels
        and what a stored baseline cannot: the machine itself being slower one night than the
        next. Within-run spread is its stand-in until the history has been measured.
Noise alone then rarely clears the floor: a significant shift has to be three times larger than
anything the runs' own spread says the machine does unprompted. The price is that a change
smaller than the floor is not flagged: repeats_needed says, per series, how many repeats the
test needs to see a change of the threshold's size, or that none can while the noise stays
this high.

One more stand-in for interleaving: where both runs carry the machine's CPU pressure while they
measured (the share of the time some task waited for a CPU, from Linux's PSI), a regression
found while tonight's machine was busier than the baseline's by more than BUSIER is not
judged. On a shared machine whose load comes and goes, that is what a slowdown of every repeat
at once, which no spread and no test can tell from a regression, mostly is. Such a night is
no baseline either, so a real regression is caught by the next quieter night.

Until a series has MIN_HISTORY good runs (the baseline among them), its night-to-night noise
is unknown, and on this kind of machine it is what fires a gate: back-to-back runs of the boot
job with nothing changed, on an idle machine, moved a process's time_to_ready by +46 % (every
repeat of the run at once, so no within-run spread and no test can tell it from a regression).
So a timed series' regression is not judged before then, and says so; the night still counts
as a good run, and adds to the history that judges from then on. A step that happened in those
first nights is still in the history, where `bench history` and the history pages find it.

Deterministic metrics (the size suite: image bytes, lines of code) need no statistics: any
change of the value is a change, a single byte included, from the first night.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from harness.compare import Comparison, RunComparison, Verdict
from harness.model import Better, Sample, SeriesKey, group_series
from harness.stats import (
    MAD_TO_SIGMA,
    min_repeats,
    permutation_p,
    relative_spread,
    repeats_to_detect,
    smallest_p,
)

NOISE_FACTOR = 3.0
HISTORY_RUNS = 10  # the good runs before tonight the night-to-night noise is measured over
MIN_HISTORY = 5  # medians that estimate needs: four night-to-night changes
BUSIER = 0.10  # more CPU pressure than the baseline's by this much: a slowdown is not judged
# Suites whose values are the same on every repeat unless something changed: they measure files.
DETERMINISTIC_SUITES = frozenset({"size"})


def is_deterministic(suite: str) -> bool:
    return suite in DETERMINISTIC_SUITES


def repeats_required(suite: str, alpha: float) -> int:
    """The fewest repeats per run with which the gate can flag anything in this suite."""
    return 1 if is_deterministic(suite) else min_repeats(alpha)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    p_value: float
    change: float  # median(NEW) / median(BASE) - 1; NaN when BASE's median is 0
    noise: float  # relative; the larger of the runs' spreads and the night-to-night noise
    floor: float  # NOISE_FACTOR * noise
    min_effect: float  # what a change must exceed: the threshold or the floor, the larger
    repeats_needed: int | None  # per run, to see a change of the threshold's size; None: the
    # floor is above the threshold, so no repeat count can while the noise stays this high
    deterministic: bool = False
    busier: bool = False  # a regression, not judged: the machine was busier than the baseline's
    early: bool = False  # a regression, not judged: too few good runs to know the series' noise

    def to_json(self) -> dict[str, object]:
        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "p_value": self.p_value,
            "change": finite(self.change),
            "noise": self.noise,
            "floor": self.floor,
            "min_effect": self.min_effect,
            "repeats_needed": self.repeats_needed,
            "deterministic": self.deterministic,
            "busier": self.busier,
            "early": self.early,
        }


def night_to_night_noise(medians: Sequence[float]) -> float:
    """How much a series' median moves from one good run to the next with nothing changed,
    relative to its level: the scaled median of the absolute changes between consecutive runs
    (oldest first), which one real step among them does not inflate. 0 with fewer than
    MIN_HISTORY medians: too few to say."""
    x = np.asarray(medians, dtype=float)
    level = float(np.median(x)) if x.size else 0.0
    if x.size < MIN_HISTORY or level == 0:
        return 0.0
    return MAD_TO_SIGMA * float(np.median(np.abs(np.diff(x)))) / abs(level)


def _deterministic(base_median: float, new_median: float, better: Better) -> Decision:
    if new_median == base_median:
        verdict: Verdict = "unchanged"
        reason = "deterministic: the same value"
    else:
        worse = new_median > base_median if better == "lower" else new_median < base_median
        verdict = "regressed" if worse else "improved"
        reason = f"deterministic: {base_median:,.12g} → {new_median:,.12g}: any change counts"
    change = new_median / base_median - 1 if base_median else math.nan
    p = 0.0 if verdict != "unchanged" else 1.0
    return Decision(verdict, reason, p, change, 0.0, 0.0, 0.0, 1, deterministic=True)


def decide(
    base: Sequence[float],
    new: Sequence[float],
    better: Better,
    threshold: float,
    alpha: float,
    deterministic: bool = False,
    night_to_night: float = 0.0,
    pressure: tuple[float | None, float | None] = (None, None),
    history: int = MIN_HISTORY,
) -> Decision:
    """The gate's verdict on two non-empty samples of one series, as the module docstring says.
    `pressure`: the CPU pressure the baseline and tonight's run were measured under, if known;
    `history`: how many good runs of the series, the baseline's included, are known."""
    base_median, new_median = float(np.median(base)), float(np.median(new))
    if deterministic:
        return _deterministic(base_median, new_median, better)
    p = permutation_p(base, new)
    own_noise = max(relative_spread(base), relative_spread(new))
    noise = max(own_noise, night_to_night)
    floor = NOISE_FACTOR * noise
    min_effect = max(threshold, floor)
    # Repeats to see the threshold: from the baseline's spread, the noise known before tonight.
    needed = (
        repeats_to_detect(threshold, relative_spread(base), alpha) if floor < threshold else None
    )
    if base_median == 0:
        reason = "BASE median is 0: no ratio to judge"
        return Decision("unchanged", reason, p, math.nan, noise, floor, min_effect, needed)
    change = new_median / base_median - 1
    moved = f"median {change:+.1%}"
    if abs(change) <= min_effect:
        reason = f"{moved}, within ±{min_effect:.1%}"
        if floor > threshold:
            reason += f" (the noise floor: {NOISE_FACTOR:g} times {noise:.1%} noise)"
        return Decision("unchanged", reason, p, change, noise, floor, min_effect, needed)
    if p >= alpha:
        reason = f"{moved}, not significant (p={p:.2g} ≥ {alpha:g})"
        if smallest_p(len(base), len(new)) >= alpha:
            reason += f"; {len(base)} and {len(new)} repeats can never reach p<{alpha:g}"
        return Decision("unchanged", reason, p, change, noise, floor, min_effect, needed)
    worse = change > 0 if better == "lower" else change < 0
    verdict: Verdict = "regressed" if worse else "improved"
    reason = f"{moved} ({better} is better), p={p:.2g}, beyond ±{min_effect:.1%}"
    base_load, new_load = pressure
    if worse and base_load is not None and new_load is not None and new_load - base_load > BUSIER:
        reason += f"; not judged: the machine was busier (CPU pressure {new_load:.0%}, "
        reason += f"against {base_load:.0%})"
        return Decision(
            "unchanged", reason, p, change, noise, floor, min_effect, needed, busier=True
        )
    if worse and history < MIN_HISTORY:
        reason += (
            f"; not judged: {history} of the {MIN_HISTORY} good runs that measure how far "
            "this series moves night to night"
        )
        return Decision(
            "unchanged", reason, p, change, noise, floor, min_effect, needed, early=True
        )
    return Decision(verdict, reason, p, change, noise, floor, min_effect, needed)


# Two runs.


@dataclass(frozen=True)
class GatedRuns:
    comparison: RunComparison  # compare's, with the gate's verdicts, reasons and p-values
    decisions: dict[str, Decision]  # by series label; none where a side has no values

    @property
    def regressed(self) -> list[Comparison]:
        return self.comparison.regressed

    @property
    def busier(self) -> list[str]:
        """The series that regressed while the machine was busier: not judged."""
        return [label for label, d in self.decisions.items() if d.busier]

    @property
    def early(self) -> list[str]:
        """The series that regressed before their history could judge it: not judged."""
        return [label for label, d in self.decisions.items() if d.early]


def _values(samples: Sequence[Sample]) -> list[float]:
    return [s.value for s in samples if s.value is not None]


def _medians(history: Sequence[Sequence[Sample]]) -> dict[SeriesKey, list[float]]:
    """Each series' per-run medians over the history's runs, oldest first."""
    medians: dict[SeriesKey, list[float]] = {}
    for samples in history:
        for key, group in group_series(samples).items():
            values = _values(group)
            if values:
                medians.setdefault(key, []).append(float(np.median(values)))
    return medians


def gate_runs(
    result: RunComparison,
    base_samples: Sequence[Sample],
    new_samples: Sequence[Sample],
    history: Sequence[Sequence[Sample]] = (),
    pressure: tuple[float | None, float | None] = (None, None),
) -> GatedRuns:
    """Judges each series `bench compare` compared with the gate instead. `history`: the
    samples of the good runs up to and including the baseline, oldest first; `pressure`: the
    CPU pressure the baseline and the new run were measured under, where known."""
    base_groups, new_groups = group_series(base_samples), group_series(new_samples)
    medians: Mapping[SeriesKey, list[float]] = _medians(history)
    judged, decisions = [], {}
    for c in result.comparisons:
        base, new = _values(base_groups[c.key]), _values(new_groups[c.key])
        if not base or not new:  # compare's verdict stands: a series that failed in NEW regressed
            judged.append(c)
            continue
        d = decide(
            base,
            new,
            c.better,
            result.threshold,
            result.alpha,
            deterministic=is_deterministic(c.suite),
            night_to_night=night_to_night_noise(medians.get(c.key, [])),
            pressure=pressure,
            history=len(medians.get(c.key, [])),
        )
        reason, failed = d.reason, len(new_groups[c.key]) - len(new)
        if failed:
            reason += f"; {failed} of {len(new_groups[c.key])} repeats failed in NEW"
        judged.append(replace(c, p_value=d.p_value, verdict=d.verdict, reason=reason))
        decisions[c.label] = d
    return GatedRuns(replace(result, comparisons=judged), decisions)


def blind_spots(gated: GatedRuns, repeats: int, threshold: float) -> list[str]:
    """Lines naming the series this night could not have seen a change of `threshold` in: too
    few repeats for their noise, or noise so high that no repeat count would do."""
    short = [
        f"{label} (needs {d.repeats_needed})"
        for label, d in gated.decisions.items()
        if d.repeats_needed is not None and d.repeats_needed > repeats
    ]
    noisy = [
        f"{label} (sees ≥ {d.min_effect:.0%})"
        for label, d in gated.decisions.items()
        if d.repeats_needed is None
    ]
    lines = []
    if short:
        lines.append(
            f"too few repeats ({repeats}) to see a {threshold:.0%} change: " + ", ".join(short)
        )
    if noisy:
        lines.append(
            f"too noisy to see a {threshold:.0%} change at any repeat count: " + ", ".join(noisy)
        )
    return lines
