"""The ``gradprobe`` command line: thin commands over the library.

Every command delegates to the Python API; bad input (a spec error, a missing file, an
unknown run) prints one line and exits with code 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from gradprobe.errors import UserError

console = Console()
err_console = Console(stderr=True)


class _Group(TyperGroup):
    """Turns :class:`UserError` anywhere below into one line on stderr and exit code 2."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except FileNotFoundError as exc:
            err_console.print(f"[bold red]error:[/] file not found: {exc.filename}",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_Group,
    name="gradprobe",
    help="See, measure, predict and fix gradient vanishing in deep networks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

StoreOption = typer.Option(
    None, "--store", help="SQLite run store (default: $GRADPROBE_STORE or runs/gradprobe.sqlite)."
)


@app.command("run")
def run_command(
    spec: Path = typer.Argument(..., help="Experiment spec (YAML or JSON)."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a field by dotted path, e.g. --set net.depth=30."
    ),
    store: Path | None = StoreOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or tables."),
) -> None:
    """Train one experiment, store it, and print the per-layer gradient table."""
    from gradprobe.api import run
    from gradprobe.report.tables import layer_table, run_table

    result = run(spec, store=store, overrides=set_, progress=not quiet)
    if quiet:
        console.print(result.run_id)
        return
    console.print(run_table([result.summary | {"run_id": result.run_id, "status": result.status,
                                                "name": result.spec.net.describe()}]))
    console.print(layer_table(result.frame(), title=result.spec.net.describe()))
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

    with Store(store) as db:
        frame = db.runs(sweep=sweep)
    if frame.empty:
        console.print("no runs yet (start one with 'gradprobe run SPEC')")
        return
    console.print(runs_listing(frame))


@app.command("show")
def show_command(
    run: str = typer.Argument(..., help="Run id (or a unique prefix, or a run name)."),
    store: Path | None = StoreOption,
) -> None:
    """Show one run: its spec, headline numbers and per-layer table."""
    from gradprobe.report.tables import layer_table, run_table
    from gradprobe.spec import load_spec
    from gradprobe.store import Store

    with Store(store) as db:
        row = db.run(run)
        frame = db.metrics(row["id"])
    spec = load_spec(row["spec"])
    console.print(f"[bold]{row['id']}[/]  {row['name']}  ({spec.net.describe()}, "
                  f"data {spec.data.name})")
    console.print(run_table([row["summary"] | {"run_id": row["id"], "status": row["status"],
                                               "name": spec.net.describe()}]))
    console.print(layer_table(frame, title=spec.net.describe()))


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
    with Store(store) as db:
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
        err_console.print(f"wrote {output}")


@app.command("demo")
def demo_command(
    store: Path | None = StoreOption,
    out: Path = typer.Option(Path("reports"), "--out", help="Where the report goes."),
    quick: bool = typer.Option(False, "--quick", help="A smaller study (for tests)."),
) -> None:
    """The main job: a study of gradient vanishing on the digits data."""
    from gradprobe.demo import run_demo

    run_demo(store=store, out=out, quick=quick, console=console)


def _register_subcommands() -> None:
    """Mount the commands that live in their own modules (each imports its heavy parts lazily)."""
    from gradprobe.cli.diagnose import diagnose_command
    from gradprobe.cli.report import report_command
    from gradprobe.cli.sweep import sweep_command
    from gradprobe.cli.theory import theory_app

    app.add_typer(theory_app, name="theory")
    app.command("sweep")(sweep_command)
    app.command("diagnose")(diagnose_command)
    app.command("report")(report_command)


_register_subcommands()


def main() -> None:
    """Console entry point."""
    app()
