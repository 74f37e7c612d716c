"""One progress bar for every long operation: a rich bar with the time left, on stderr.

Used by sweeps (:class:`gradprobe.sweeps.progress.SweepProgress`), ``repair`` and
``diagnose`` with training (:class:`StepProgress`, a training-loop callback). A bar is shown
only when asked for and stderr is a terminal, so pipes, logs and ``--quiet`` get nothing;
a disabled bar does nothing.

Example:
    >>> with ProgressBar(False, "repair", total=90) as bar:
    ...     bar.advance(30)
    ...     bar.describe("repair: batchnorm")
    >>> bar.completed
    30
"""

from __future__ import annotations

import sys
from typing import Any, TextIO


def _stderr() -> TextIO:
    return sys.stderr


def wanted(enabled: bool) -> bool:
    """Whether a bar should show: asked for, and stderr is a terminal."""
    return bool(enabled) and _stderr().isatty()


class ProgressBar:
    """``DESCRIPTION  [=====>   ]  1200/1800 UNIT  elapsed  ETA time-left``."""

    def __init__(self, enabled: bool, description: str, total: int, unit: str = "steps",
                 transient: bool = False) -> None:
        self.description = description
        self.completed = 0
        self._bar: Any = None
        self._task: Any = None
        if wanted(enabled):
            from rich.console import Console
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
                TextColumn(unit), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=Console(file=_stderr()), transient=transient,
            )
            self._task = self._bar.add_task(description, total=max(total, 1))

    @property
    def shown(self) -> bool:
        """Whether the bar is drawn."""
        return self._bar is not None

    def advance(self, n: int = 1) -> None:
        """The work moved on by ``n`` units."""
        self.completed += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n)

    def describe(self, description: str) -> None:
        """A new label (rich markup is escaped by the caller)."""
        self.description = description
        if self._bar is not None:
            self._bar.update(self._task, description=description)

    def start(self) -> ProgressBar:
        """Start drawing (when shown)."""
        if self._bar is not None:
            self._bar.start()
        return self

    def stop(self) -> None:
        """Stop drawing."""
        if self._bar is not None:
            self._bar.stop()

    def __enter__(self) -> ProgressBar:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
