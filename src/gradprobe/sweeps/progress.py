"""A progress bar with an ETA over a whole sweep, counted in member-steps.

One member-step is one configuration trained for one step, so a vectorised group of 64
advances the bar by 64 per batched step, and the ETA is honest across groups of different
sizes. A disabled bar does nothing.

Example:
    >>> with SweepProgress(False, "demo", total_steps=100, total_runs=2) as bar:
    ...     bar.advance(50)
    ...     bar.run_done()
"""

from __future__ import annotations

from typing import Any


class SweepProgress:
    """Rich progress bar: ``sweep NAME  runs 3/36  [=====>   ]  1200/1800 steps  ETA``."""

    def __init__(
        self, enabled: bool, name: str, total_steps: int, total_runs: int, done_runs: int = 0
    ) -> None:
        self.name = name
        self.total_runs = total_runs
        self.done_runs = done_runs
        self._bar: Any = None
        self._task: Any = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("steps"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self._task = self._bar.add_task(self._label(), total=max(total_steps, 1))

    def _label(self) -> str:
        from rich.markup import escape

        return f"sweep {escape(self.name)}  runs {self.done_runs}/{self.total_runs}"

    def advance(self, member_steps: int) -> None:
        """Training moved on by ``member_steps``."""
        if self._bar is not None:
            self._bar.update(self._task, advance=member_steps)

    def run_done(self) -> None:
        """One more configuration is stored."""
        self.done_runs += 1
        if self._bar is not None:
            self._bar.update(self._task, description=self._label())

    def __enter__(self) -> SweepProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
