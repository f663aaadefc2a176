"""Live progress of a run: suite, target, repeat i/N and the last value, on a terminal only."""

from __future__ import annotations

from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn


class RunProgress(Protocol):
    def target_started(self, suite: str, target: str, repeats: int) -> None: ...
    def repeat_done(self, last: str) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class LiveProgress:
    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[last]}"),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None
        self._progress.start()

    def target_started(self, suite: str, target: str, repeats: int) -> None:
        self._task = self._progress.add_task(f"{suite} · {target}", total=repeats, last="")

    def repeat_done(self, last: str) -> None:
        if self._task is not None:
            self._progress.update(self._task, advance=1, last=last)

    def message(self, text: str) -> None:
        self._progress.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        self._progress.stop()


class QuietProgress:
    """No live display when output is not a terminal; messages still say what went wrong."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def target_started(self, suite: str, target: str, repeats: int) -> None:
        self._console.print(f"{suite} · {target}: {repeats} repeats", markup=False)

    def repeat_done(self, last: str) -> None:
        pass

    def message(self, text: str) -> None:
        self._console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        pass


def progress_for(console: Console) -> RunProgress:
    return LiveProgress(console) if console.is_terminal else QuietProgress(console)
