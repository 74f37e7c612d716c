"""A progress bar with an ETA over a whole sweep, counted in member-steps.

One member-step is one configuration trained for one step, so a vectorised group of 64
advances the bar by 64 per batched step, and the ETA is honest across groups of different
sizes. The bar is :class:`gradprobe.progress.ProgressBar` (stderr, only on a terminal); a
disabled bar does nothing.

Example:
    >>> with SweepProgress(False, "demo", total_steps=100, total_runs=2) as bar:
    ...     bar.advance(50)
    ...     bar.run_done()
    >>> bar.done_runs
    1
"""

from __future__ import annotations

from rich.markup import escape

from gradprobe.progress import ProgressBar


class SweepProgress:
    """``sweep NAME  runs 3/36  [=====>   ]  1200/1800 steps  elapsed  ETA time-left``."""

    def __init__(
        self, enabled: bool, name: str, total_steps: int, total_runs: int, done_runs: int = 0
    ) -> None:
        self.name = name
        self.total_runs = total_runs
        self.done_runs = done_runs
        self.bar = ProgressBar(enabled, self._label(), total_steps)

    def _label(self) -> str:
        return f"sweep {escape(self.name)}  runs {self.done_runs}/{self.total_runs}"

    def advance(self, member_steps: int) -> None:
        """Training moved on by ``member_steps``."""
        self.bar.advance(member_steps)

    def run_done(self) -> None:
        """One more configuration is stored."""
        self.done_runs += 1
        self.bar.describe(self._label())

    def __enter__(self) -> SweepProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)
