"""Run an entry, judge it, store it, print it.

The exit-code contract of ``gradprobe reproduce``: 0 when every claim holds, 1 when any
does not (the run itself worked), 2 for bad input (an unknown name).

Example:
    >>> rep = reproduce("hanin2018", quick=True)                    # doctest: +SKIP
    >>> rep.as_json()["claims"][0]["ok"], exit_code([rep])          # doctest: +SKIP
    (True, 0)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gradprobe.errors import UserError
from gradprobe.reproduce.base import Reproduction
from gradprobe.reproduce.registry import get_entry

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

RECORD_SUFFIX = ".json"


def reproduce(name: str, quick: bool = False) -> Reproduction:
    """Run the entry ``name`` (``quick``: its small version) and return its verdicts.

    Runs on one torch thread (the experiments are many small networks, for which a thread
    pool costs more than it brings), restoring the caller's setting.
    """
    import torch

    entry = get_entry(name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started = time.perf_counter()
    try:
        claims, figure = entry.run(quick)
    finally:
        torch.set_num_threads(threads)
    return Reproduction(entry.name, entry.title, entry.citation, entry.scale(quick), claims,
                        figure, quick, round(time.perf_counter() - started, 2))


def exit_code(reps: Sequence[Reproduction]) -> int:
    """0 when every claim of every run holds, else 1."""
    return 0 if all(r.ok for r in reps) else 1


def save(rep: Reproduction, directory: str | Path) -> Path:
    """Store one run as ``DIRECTORY/NAME.json`` (the report's classics chapter reads these)."""
    path = Path(directory) / f"{rep.name}{RECORD_SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rep.as_record(), indent=1, allow_nan=True))
    return path


def load(directory: str | Path) -> list[Reproduction]:
    """Every stored run under ``directory``, in the registry's order."""
    from gradprobe.reproduce.registry import names

    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such directory of stored reproductions")
    found = {p.stem: p for p in directory.glob(f"*{RECORD_SUFFIX}")}
    return [Reproduction.from_record(json.loads(found[n].read_text()))
            for n in names() if n in found]


def claims_table(rep: Reproduction) -> Table:
    """Paper vs measured, with tolerance and verdict, one row per claim."""
    from rich.table import Table

    table = Table(title=f"{rep.name}: {rep.title}", title_justify="left", expand=False)
    for col, kw in (("claim", {"ratio": 3, "overflow": "fold"}), ("paper", {"justify": "right"}),
                    ("measured", {"justify": "right"}), ("tolerance", {"justify": "right"}),
                    ("", {})):
        table.add_column(col, **kw)
    for c in rep.claims:
        table.add_row(c.claim, _fmt(c.paper), _fmt(c.measured), c.tolerance,
                      "[green]ok[/]" if c.ok else "[bold red]NOT REPRODUCED[/]")
    return table


def _fmt(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return "nan" if not math.isfinite(value) else f"{value:.4g}"


def run_quick_classics(directory: str | Path, console: Console,
                       names: Sequence[str] | None = None) -> list[Reproduction]:
    """Every entry's ``--quick`` version (or ``names``), stored under ``directory``, one line
    of verdict each on ``console``: the demo's "Classic results" step."""
    from gradprobe.reproduce.registry import names as all_names

    reps = []
    for name in names or all_names():
        rep = reproduce(name, quick=True)
        save(rep, directory)
        held = sum(c.ok for c in rep.claims)
        console.print(f"  reproduce {name}: {held}/{len(rep.claims)} claims hold "
                      f"({rep.seconds:.0f} s)", highlight=False)
        reps.append(rep)
    return reps
