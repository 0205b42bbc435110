"""Progress display: one bar for the whole run and one for the cell in progress, each with an ETA."""

from __future__ import annotations

from types import TracebackType
from typing import Any


class ProgressReporter:
    """Callable ``(cell, advance, cell_total)`` that drives rich progress bars (or nothing when disabled)."""

    def __init__(self, total: int, enabled: bool = True, description: str = "all cells") -> None:
        self.total = total
        self.enabled = enabled
        self.description = description
        self._progress: Any = None
        self._overall: Any = None
        self._cell_task: Any = None
        self._cell: str | None = None

    def __enter__(self) -> ProgressReporter:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True), transient=False,
            )
            self._progress.__enter__()
            self._overall = self._progress.add_task(self.description, total=self.total)
        return self

    def __call__(self, cell: str, advance: int, cell_total: int) -> None:
        if self._progress is None:
            return
        if cell != self._cell:
            if self._cell_task is not None:
                self._progress.remove_task(self._cell_task)
            self._cell = cell
            self._cell_task = self._progress.add_task(f"  {cell}", total=cell_total)
        self._progress.advance(self._cell_task, advance)
        self._progress.advance(self._overall, advance)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)
