"""``gradprobe report``: stored runs to a self-contained HTML report or static figures.

The command only parses options; :func:`gradprobe.report.api.make_report` does the work.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

console = Console()


def report_command(
    runs: list[str] = typer.Argument(
        None, help="Run ids (or unique prefixes, or run names) to report on."
    ),
    sweep: str | None = typer.Option(None, "--sweep", help="Report on every run of a sweep."),
    all_runs: bool = typer.Option(False, "--all", help="Report on every run in the store."),
    output: Path | None = typer.Option(
        None, "--output", "-o",
        help="HTML file (default report.html), or folder for png/svg (default figures/).",
    ),
    format: str = typer.Option("html", "--format", "-f", help="html | png | svg"),
    title: str = typer.Option("gradprobe report", "--title", help="The report's title."),
    store: Path | None = typer.Option(
        None, "--store",
        help="SQLite run store (default: $GRADPROBE_STORE or runs/gradprobe.sqlite).",
    ),
) -> None:
    """Draw stored runs: gradient flow, heat maps, activations, training, theory, spectra.

    One self-contained HTML file (Plotly embedded, opens offline), or with --format png|svg
    one matplotlib figure per file.
    """
    from gradprobe.report.api import make_report

    paths = make_report(store, runs=runs or [], sweep=sweep, all_runs=all_runs, output=output,
                        fmt=format, title=title)
    if format == "html":
        console.print(f"report written to {escape(str(paths[0]))}", highlight=False, soft_wrap=True)
    else:
        folder = escape(str(paths[0].parent))
        console.print(f"{len(paths)} figures written to {folder}", highlight=False,
                      soft_wrap=True)
        for path in paths:
            console.print(f"  {escape(str(path))}", highlight=False, soft_wrap=True)
