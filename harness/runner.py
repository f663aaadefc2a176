"""The runner: for each target, prepare, warm up, repeat, and always clean up.

Every sample is stored the moment it is measured. A repeat that raises or outlives its timeout
is recorded as failed with the reason, and its instances are stopped; a target that is
unavailable, fails to say so, or fails to prepare is recorded as failed and the other targets
still run. Ctrl-C and SIGTERM stop the run after cleaning up, and mark it interrupted. A run
begins by removing what dead harnesses left (harness/leftovers.py), and marks everything it
spawns as its own, so that the next run can do the same for it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType, TracebackType

from harness.leftovers import sweep, sweep_own
from harness.metadata import capture_host
from harness.model import Measurement, Metric, Params, Run, Sample
from harness.progress import RunProgress
from harness.store import Store
from harness.suites.base import RepeatContext, Suite
from harness.summary import format_value
from harness.targets.base import Availability, LaunchSettings, Target
from hostkit import namespaces, owners
from hostkit.interrupts import holding, signals_deferred, terminate_as_interrupt

HOST_CPU = Metric("host_cpu_seconds", "s", "lower")
HOST_PEAK_MEMORY = Metric("host_peak_memory", "bytes", "lower")
WATCHDOG_GRACE = 5.0  # the suite's own deadline comes first; the watchdog only backs it up
# After the watchdog stopped a repeat's instances, how long the repeat has to notice before it
# is interrupted where it is stuck (creating an instance: nothing to stop exists yet).
STUCK_GRACE = 5.0
STUCK_SIGNAL = signal.SIGALRM


class RepeatStuck(TimeoutError):
    """Raised in the main thread inside a repeat that did not end after its deadline."""


class Watchdog:
    """Backs up a repeat's own deadline from a thread of its own: at `after` seconds it stops
    the repeat's instances; if the repeat has still not returned STUCK_GRACE later, it sends
    STUCK_SIGNAL to the main thread, whose handler raises RepeatStuck there. Signals interrupt
    blocking calls, so this reaches a repeat stuck where no instance exists to stop."""

    active: Watchdog | None = None  # the one whose repeat runs now, for the signal handler

    def __init__(self, ctx: RepeatContext, after: float) -> None:
        self._ctx = ctx
        self._after = after
        self._done = threading.Event()
        self.firing = False
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        Watchdog.active = self
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.firing = False
        Watchdog.active = None
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        if self._done.wait(self._after):
            return
        self._ctx.kill()
        if self._done.wait(STUCK_GRACE):
            return
        main = threading.main_thread().ident
        if main is None or threading.current_thread() is threading.main_thread():
            return
        self.firing = True
        while not self._done.is_set():  # again and again: the first may land where held back
            signal.pthread_kill(main, STUCK_SIGNAL)
            self._done.wait(0.5)


def _stuck(signum: int, frame: FrameType | None) -> None:
    watchdog = Watchdog.active
    if watchdog is None or not watchdog.firing or holding():
        return  # not ours, or inside a spawn or a stop: the watchdog sends it again
    watchdog.firing = False
    raise RepeatStuck("the repeat was stuck after its instances were stopped")


@contextlib.contextmanager
def stuck_repeats_interrupted() -> Iterator[None]:
    """For the block, the watchdog's signal raises RepeatStuck in a stuck repeat."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(STUCK_SIGNAL, _stuck)
    try:
        yield
    finally:
        signal.signal(STUCK_SIGNAL, previous)


@dataclass(frozen=True)
class RunSettings:
    repeat: int = 10
    warmup: int = 1
    timeout: float = 120.0
    cpus: int | None = None
    params: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # Repeats of a target's parameter sets in turn (each set's first, then each set's second,
    # ...), so that a drift in the machine's load touches every set alike.
    interleave: bool = False


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def describe_failure(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {text}"


class Runner:
    def __init__(self, store: Store, settings: RunSettings, progress: RunProgress) -> None:
        self.store = store
        self.settings = settings
        self.progress = progress

    def run(self, suite: Suite, targets: Sequence[Target], command: str) -> Run:
        run = Run(id=new_run_id(), started=time.time(), command=command, metadata=capture_host())
        run.metadata["harness_pid"] = os.getpid()
        run.metadata["harness_owner"] = owners.token()
        held_before = namespaces.held()  # not this run's to remove (a test's own, say)
        # The first Ctrl-C or SIGTERM stops the run; later ones cannot cut short its clean-up.
        with terminate_as_interrupt(once=True), owners.marked(), stuck_repeats_interrupted():
            try:
                self.store.begin_run(run)
                self._sweep()
                for target in targets:
                    self._run_target(run, suite, target)
            except BaseException:
                run.status = "interrupted"
                raise
            else:
                run.status = "complete"
            finally:
                with signals_deferred():  # a signal now is raised once the run is recorded
                    self._release(targets)
                    self._sweep()  # again: a run stopped early must not skip it
                    self._sweep_own(held_before)
                    run.ended = time.time()
                    self.store.end_run(run.id, run.ended, run.status)
                    self.progress.close()
        return run

    def _sweep(self) -> None:
        """Removes what dead harnesses left, and ends their runs."""
        try:
            sweep(self.progress.message)
            for abandoned in self.store.end_abandoned_runs(owners.token_alive):
                self.progress.message(f"run {abandoned} lost its harness: now interrupted")
        except Exception as exc:  # what others left must not stop this run
            self.progress.message(f"removing what dead runs left failed: {describe_failure(exc)}")

    def _sweep_own(self, kept: Sequence[str]) -> None:
        try:
            sweep_own(self.progress.message, kept)
        except Exception as exc:
            self.progress.message(f"removing what this run left failed: {describe_failure(exc)}")

    def _release(self, targets: Sequence[Target]) -> None:
        for target in targets:
            try:
                target.release()
            except Exception as exc:
                self.progress.message(f"{target.name}: releasing failed: {describe_failure(exc)}")

    def _run_target(self, run: Run, suite: Suite, target: Target) -> None:
        try:
            param_sets, own = suite.measured_param_sets(self.settings.params, target)
            recorded_params = [self._sample_params(params, target) for params in param_sets]
        except Exception as exc:  # a broken target must not stop the others
            reason = f"{target.name}: its parameters could not be set: {describe_failure(exc)}"
            self.progress.message(reason)
            asked = {name: ",".join(values) for name, values in self.settings.params.items()}
            self._record_failures(run, suite, target, [asked], reason)
            return
        try:
            availability = target.availability()
        except Exception as exc:
            availability = Availability(
                False, f"checking it failed: {describe_failure(exc)}", "see `bench doctor`"
            )
        if not availability.ok:
            reason = f"{target.name} is unavailable: {availability.reason}"
            self.progress.message(f"{reason}; to fix: {availability.fix}")
            self._record_failures(run, suite, target, recorded_params, reason)
            return
        workload = suite.workload(target)
        try:
            if suite.launches:
                target.prepare(workload, self.progress.message, own)
            suite.prepare(target, workload, param_sets, self.progress.message)
            targets_metadata = run.metadata["targets"]
            assert isinstance(targets_metadata, dict)
            targets_metadata[target.name] = target.metadata()
            self.store.update_metadata(run.id, run.metadata)
        except Exception as exc:
            reason = f"preparing {target.name} failed: {describe_failure(exc)}"
            self.progress.message(reason)
            self._record_failures(run, suite, target, recorded_params, reason)
            return
        repeats = self.settings.warmup + self.settings.repeat
        launches: list[tuple[Params, LaunchSettings]] = []
        for params, recorded in zip(param_sets, recorded_params, strict=True):
            try:
                launches.append((recorded, suite.launch_settings(params, self.settings.cpus)))
            except Exception as exc:  # one bad set must not stop the others
                reason = f"{target.name}: {params}: cannot launch: {describe_failure(exc)}"
                self.progress.message(reason)
                self._record_failures(run, suite, target, [recorded], reason)
        indices = range(-self.settings.warmup, self.settings.repeat)
        if self.settings.interleave and launches:
            self.progress.target_started(suite.name, target.name, repeats * len(launches))
            for index in indices:
                for recorded, launch in launches:
                    self._repeat(run, suite, target, recorded, launch, index)
            return
        for recorded, launch in launches:
            self.progress.target_started(suite.name, target.name, repeats)
            for index in indices:
                self._repeat(run, suite, target, recorded, launch, index)

    def _sample_params(self, params: Params, target: Target) -> Params:
        # What the target says of itself (accel, a VM's default memory), unless asked otherwise.
        recorded = {**target.sample_params(), **params}
        if self.settings.cpus is not None:
            recorded["cpus"] = self.settings.cpus
        return recorded

    def _repeat(
        self,
        run: Run,
        suite: Suite,
        target: Target,
        params: Params,
        launch: LaunchSettings,
        index: int,
    ) -> None:
        """One repeat; a negative index is a warm-up, measured but not recorded."""
        timeout = self.settings.timeout
        ctx = RepeatContext(target, launch, deadline=time.perf_counter() + timeout)
        measurements: list[Measurement] = []
        failure = None
        try:
            with Watchdog(ctx, timeout + WATCHDOG_GRACE):
                measurements = suite.run_once(target, params, ctx)
            usage = ctx.usage()
            if usage.cpu_seconds is not None:
                measurements.append(Measurement(HOST_CPU, usage.cpu_seconds))
            if usage.peak_memory_bytes is not None:
                measurements.append(Measurement(HOST_PEAK_MEMORY, usage.peak_memory_bytes))
        except Exception as exc:
            failure = describe_failure(exc)
            if ctx.killed_at_deadline or isinstance(exc, TimeoutError):
                failure = f"timed out after {timeout:g} s: {failure}"
        finally:
            try:
                ctx.stop_all()
            finally:  # said even as a Ctrl-C held back during the stops is raised
                for stop_failure in ctx.stop_failures:
                    said = describe_failure(stop_failure)
                    self.progress.message(f"{target.name}: clean-up failed: {said}")
        warmup = index < 0
        if failure is not None:
            self.progress.message(
                f"{suite.name} · {target.name} {'warm-up' if warmup else 'repeat'} "
                f"{index if warmup else index + 1} failed: {failure}"
            )
            if not warmup:
                self._record_failures(run, suite, target, [params], failure, repeat=index)
        elif not warmup:
            for measurement in measurements:
                sample = self._sample(run, suite, target, params, index, measurement)
                self.store.add_sample(sample, measurement.distribution)
        headline = measurements[0] if measurements else None
        self.progress.repeat_done(
            f"{headline.metric.name} {format_value(headline.value, headline.metric.unit)}"
            if headline
            else "failed"
        )

    def _sample(
        self,
        run: Run,
        suite: Suite,
        target: Target,
        params: Params,
        repeat: int,
        measurement: Measurement,
    ) -> Sample:
        return Sample(
            run_id=run.id,
            suite=suite.name,
            target=target.name,
            metric=measurement.metric.name,
            unit=measurement.metric.unit,
            better=measurement.metric.better,
            params=params,
            repeat=repeat,
            time=time.time(),
            value=measurement.value,
        )

    def _record_failures(
        self,
        run: Run,
        suite: Suite,
        target: Target,
        param_sets: Sequence[Params],
        reason: str,
        repeat: int = 0,
    ) -> None:
        for params in param_sets:
            for metric in suite.metrics_for(params):
                self.store.add_sample(
                    Sample(
                        run_id=run.id,
                        suite=suite.name,
                        target=target.name,
                        metric=metric.name,
                        unit=metric.unit,
                        better=metric.better,
                        params=params,
                        repeat=repeat,
                        time=time.time(),
                        value=None,
                        failure=reason,
                    )
                )
