"""Rich progress bars for long jobs (the executor reports phases; the CLI draws them)."""

from __future__ import annotations

from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

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
