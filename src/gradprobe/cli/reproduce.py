"""``gradprobe reproduce NAME``: a classic result of the field, rerun and checked.

Exit codes: 0 when every claim is reproduced within its tolerance, 1 when any is not,
2 for bad input (an unknown name, no name).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from gradprobe.errors import UserError

console = Console()


def reproduce_command(
    name: str | None = typer.Argument(None, help="Entry to run (see --list)."),
    quick: bool = typer.Option(False, "--quick", help="The small version (well under a minute)."),
    as_json: bool = typer.Option(False, "--json", help='Print {"name", "claims": [...]} only.'),
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="Write an HTML report of this run."),
    list_: bool = typer.Option(False, "--list", help="List the entries and exit."),
    save_to: Path | None = typer.Option(None, "--save", help="Store the run as DIR/NAME.json "
                                        "(the report's 'Classic results' chapter reads these)."),
) -> None:
    """Rerun a paper's experiment, print paper vs measured with tolerances and verdicts.

    Exit code 0 when every claim holds, 1 when any does not, 2 for bad input.
    """
    from gradprobe.reproduce.registry import entries, names

    if list_:
        for entry in entries():
            console.print(f"[bold]{entry.name:<15}[/] {entry.summary}", highlight=False,
                          soft_wrap=True)
        return
    if name is None:
        raise UserError(f"give an entry name (allowed: {', '.join(names())}) or --list")
    from gradprobe.reproduce.runner import claims_table, exit_code, reproduce, save

    rep = reproduce(name, quick=quick)
    if save_to is not None:
        save(rep, save_to)
    if output is not None:
        from gradprobe.report.build import write_classics

        write_classics([rep], output)
    if as_json:
        sys.stdout.write(json.dumps(rep.as_json()) + "\n")
    else:
        console.print(f"[bold]{rep.citation}[/]", highlight=False)
        console.print(f"scale: {rep.scale}{' (--quick)' if quick else ''}; {rep.seconds:.0f} s",
                      highlight=False)
        console.print(claims_table(rep))
        verdict = "reproduced" if rep.ok else "NOT reproduced"
        console.print(f"{sum(c.ok for c in rep.claims)}/{len(rep.claims)} claims hold: "
                      f"{verdict}", highlight=False)
        if output is not None:
            console.print(f"report: {output}", highlight=False)
    raise typer.Exit(exit_code([rep]))
