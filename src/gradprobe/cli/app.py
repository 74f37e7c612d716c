"""The ``gradprobe`` command line: thin commands over the library.

Every command delegates to the Python API. Anything the user can fix (a spec error, a
missing or unwritable file, a corrupt store, an unknown run) prints one line and exits with
code 2; an internal error prints one line and exits with code 1, and ``--debug`` shows its
traceback (:mod:`gradprobe.cli.errors`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from gradprobe.cli.console import console, err_console
from gradprobe.cli.errors import command_group
from gradprobe.errors import UserError

app = command_group("gradprobe", "See, measure, predict and fix gradient vanishing in deep "
                    "networks.", no_args_is_help=True)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of internal errors."),
) -> None:
    """See, measure, predict and fix gradient vanishing in deep networks."""


StoreOption = typer.Option(
    None, "--store", help="SQLite run store (default: $GRADPROBE_STORE or runs/gradprobe.sqlite)."
)

ThreadsOption = typer.Option(
    None, "--threads", help="Torch threads while training (default: 1 for models under "
    "1M parameters, else one per core; see docs/performance.md)."
)


@app.command("run")
def run_command(
    spec: Path = typer.Argument(..., help="Experiment spec (YAML or JSON)."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a field by dotted path, e.g. --set net.depth=30."
    ),
    store: Path | None = StoreOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or tables."),
    threads: int | None = ThreadsOption,
) -> None:
    """Train one experiment, store it, and print the per-layer gradient table."""
    from gradprobe.api import run
    from gradprobe.report.tables import layer_table, run_table

    result = run(spec, store=store, overrides=set_, progress=not quiet, threads=threads)
    if quiet:
        console.print(result.run_id)
        return
    label = escape(result.spec.net.describe())
    console.print(run_table([result.summary | {"run_id": result.run_id, "status": result.status,
                                                "name": label}]))
    console.print(layer_table(plain_cells(result.frame()), title=label))
    if result.spec.train.autopilot:
        from gradprobe.autopilot.records import summarize

        console.print(summarize(result.metrics) or "autopilot: no weight layer to act on",
                      highlight=False, soft_wrap=True)


@app.command("runs")
def runs_command(
    store: Path | None = StoreOption,
    sweep: str | None = typer.Option(None, "--sweep", help="Only the runs of this sweep."),
) -> None:
    """List the runs in the store."""
    from gradprobe.report.tables import runs_listing
    from gradprobe.store import Store

    with Store(store, create=False) as db:
        frame = db.runs(sweep=sweep)
    if frame.empty:
        console.print("no runs yet (start one with 'gradprobe run SPEC')")
        return
    console.print(runs_listing(plain_cells(frame)))


@app.command("show")
def show_command(
    run: str = typer.Argument(..., help="Run id (or a unique prefix, or a run name)."),
    store: Path | None = StoreOption,
) -> None:
    """Show one run: its spec, headline numbers and per-layer table."""
    from gradprobe.report.tables import layer_table, run_table
    from gradprobe.spec import load_spec
    from gradprobe.store import Store

    with Store(store, create=False) as db:
        row = db.run(run)
        frame = db.metrics(row["id"])
    spec = load_spec(row["spec"])
    label = escape(spec.net.describe())
    console.print(f"[bold]{escape(row['id'])}[/]  {escape(row['name'])}  ({label}, "
                  f"data {spec.data.name})", highlight=False)
    console.print(run_table([row["summary"] | {"run_id": row["id"], "status": row["status"],
                                               "name": label}]))
    console.print(layer_table(plain_cells(frame), title=label))


@app.command("export")
def export_command(
    run: str = typer.Argument(..., help="Run id (or a unique prefix, or a run name)."),
    format: str = typer.Option("csv", "--format", "-f", help="csv | json | parquet"),
    output: Path | None = typer.Option(None, "--output", "-o", help="File (default: stdout)."),
    store: Path | None = StoreOption,
) -> None:
    """Export one run's tidy metrics as csv, json or parquet."""
    from gradprobe.store import Store

    if format not in ("csv", "json", "parquet"):
        raise UserError(f"--format: unknown format {format!r} (allowed: csv, json, parquet)")
    with Store(store, create=False) as db:
        row = db.run(run)
        frame = db.metrics(row["id"])
    if format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UserError("--format parquet needs pyarrow: pip install 'gradprobe[parquet]' "
                            "(or use csv or json)") from None
        if output is None:
            raise UserError("--format parquet needs --output FILE (binary output)")
        frame.to_parquet(output, index=False)
    elif format == "csv":
        text = frame.to_csv(index=False)
    else:
        text = json.dumps({"run": {k: row[k] for k in ("id", "name", "status", "spec", "summary")},
                           "metrics": json.loads(frame.to_json(orient="records"))}, indent=1)
    if format != "parquet":
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text)
    if output is not None:
        err_console.print(f"wrote {escape(str(output))}", highlight=False, soft_wrap=True)


@app.command("demo")
def demo_command(
    store: Path | None = StoreOption,
    out: Path = typer.Option(Path("reports"), "--out", help="Where the report goes."),
    quick: bool = typer.Option(False, "--quick", help="A smaller study (for tests)."),
) -> None:
    """The main job: a study of gradient vanishing on the digits data."""
    from gradprobe.app.demo import run_demo

    run_demo(store=store, out=out, quick=quick, console=console)


_TEXT_COLUMNS = ("id", "name", "sweep", "status", "layer", "quantity", "config_key", "error")


def plain_cells(frame: Any) -> Any:
    """A copy of ``frame`` safe for Rich tables: text escaped, missing text as ``""``."""
    frame = frame.copy()
    for col in frame.columns:
        if col in _TEXT_COLUMNS or frame[col].dtype == object:
            frame[col] = [escape(v) if isinstance(v, str) else ("" if v is None or v != v else v)
                          for v in frame[col]]
    return frame


def _register_subcommands() -> None:
    """Mount the commands that live in their own modules (each imports its heavy parts lazily)."""
    from gradprobe.cli.diagnose import diagnose_command
    from gradprobe.cli.report import report_command
    from gradprobe.cli.reproduce import reproduce_command
    from gradprobe.cli.serve import serve_command
    from gradprobe.cli.sweep import sweep_command
    from gradprobe.cli.theory import theory_app

    app.add_typer(theory_app, name="theory")
    app.command("sweep")(sweep_command)
    app.command("diagnose")(diagnose_command)
    app.command("report")(report_command)
    app.command("serve")(serve_command)
    app.command("reproduce")(reproduce_command)


_register_subcommands()


def main() -> None:
    """Console entry point."""
    app()
