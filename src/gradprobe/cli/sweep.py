"""``gradprobe sweep``: train every configuration of a sweep spec, resumably.

Registered by ``gradprobe.cli`` as ``app.command("sweep")(sweep_command)``. The command is
thin: :func:`gradprobe.sweeps.sweep` does the work; this prints the plan, a progress bar
and the table of results.

Example::

    gradprobe sweep examples/sweeps/init-study.yaml --store runs/study.sqlite
    gradprobe sweep examples/sweeps/init-study.yaml --store runs/study.sqlite --resume
    gradprobe sweep big.yaml --backend ray --address auto
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gradprobe.errors import UserError

MAX_ROWS = 40  # rows printed; the rest are in the store


def sweep_command(
    spec: Path = typer.Argument(..., help="Sweep spec (YAML or JSON): base + grid/zip."),
    store: Path | None = typer.Option(
        None, "--store", help="SQLite run store (default: $GRADPROBE_STORE or "
        "runs/gradprobe.sqlite)."
    ),
    backend: str = typer.Option("local", "--backend", help="Where to train: local | ray."),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to join (e.g. auto or HOST:6379); default: a "
        "private local Ray."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Train only the configurations not yet in the store."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a sweep field, e.g. --set base.train.steps=20 or "
        "--set group_size=16."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table."),
    threads: int | None = typer.Option(
        None, "--threads", help="Torch threads per task (default: 1 for groups under "
        "1M parameters, else one per core; see docs/performance.md)."
    ),
) -> None:
    """Train every configuration of a sweep (vectorised where possible) and store each run.

    Interrupted sweeps keep every finished run; --resume trains only what is missing.
    """
    from gradprobe.sweeps.runner import sweep

    console = Console()
    if address and backend != "ray":
        raise UserError("--address is for the ray backend: add --backend ray")
    stored: list[dict[str, Any]] = []
    try:
        frame = sweep(spec, store=store, backend=backend, resume=resume, address=address,
                      overrides=set_, progress=not quiet, on_run=stored.append,
                      threads=threads)
    except KeyboardInterrupt:
        Console(stderr=True).print(
            f"interrupted: {len(stored)} more run(s) stored this time; run the same command "
            "with --resume to train only the missing configurations"
        )
        raise typer.Exit(130) from None
    if quiet:
        console.print(f"{frame.attrs.get('plan', '')}; {len(frame)} runs in the store",
                      highlight=False)
        return
    console.print(f"[bold]{escape(spec.stem)}[/]: {frame.attrs.get('plan', '')}"
                  + (f"; {frame.attrs['resumed']} already stored" if frame.attrs.get("resumed")
                     else ""))
    console.print(results_table(frame))
    counts = frame["status"].value_counts().to_dict()
    console.print(", ".join(f"{n} {status}" for status, n in counts.items()))


def results_table(frame: pd.DataFrame, max_rows: int = MAX_ROWS) -> Table:
    """A rich table of a sweep's results (at most ``max_rows`` rows)."""
    table = Table(show_edge=False, header_style="bold")
    for col in frame.columns:
        table.add_column(escape(str(col)), justify="right" if col.startswith("final") else "left")
    for row in frame.head(max_rows).itertuples(index=False):
        table.add_row(*(_cell(v) for v in row))
    if len(frame) > max_rows:
        table.caption = f"... {len(frame) - max_rows} more (gradprobe runs --sweep NAME)"
    return table


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return escape("" if value is None else str(value))
