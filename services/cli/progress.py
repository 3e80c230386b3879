"""Rich progress bars for long jobs (the executor reports phases; the CLI draws them)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from services.cli.common import err

LABELS = {
    "hold": "holding funds in the ledger",
    "submit": "submitting batches to the bank",
    "settle": "applying the bank's results",
}


class Bars:
    """A ``services.payments.execute.Progress`` drawn with rich on stderr (stdout stays for results)."""

    def __init__(self, enabled: bool = True) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            disable=not enabled,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> Bars:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def start(self, phase: str, total: int) -> None:
        if phase in self._tasks:
            self._progress.update(self._tasks[phase], total=total)
        else:
            self._tasks[phase] = self._progress.add_task(LABELS.get(phase, phase), total=total)

    def advance(self, phase: str, amount: int = 1) -> None:
        if phase not in self._tasks:
            self.start(phase, 0)
        self._progress.advance(self._tasks[phase], amount)


@contextmanager
def working(description: str) -> Iterator[None]:
    """A spinner with the time elapsed on stderr, for one long step that cannot count its progress (a single
    statement in the database); gone when the step ends, and nothing at all when stderr is not a terminal."""
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
    ) as spinner:
        spinner.add_task(description, total=None)
        yield
