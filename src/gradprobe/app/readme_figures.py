"""The README's figures (``make figures``): three static PNGs from the demo study.

Runs (or, when ``gradprobe demo`` already filled the store, only reads) the study's sweeps,
builds the study report, and draws three of its figures with matplotlib into ``docs/img``:

* ``depth-sigmoid.png``: backward signal per layer of plain sigmoid nets of 5 to 50
  layers, with the theory's lines;
* ``phase-diagram-tanh.png``: the tanh phase diagram with the five inits on it;
* ``training-remedies.png``: training curves of the remedies against the plain baseline.

Usage::

    python -m gradprobe.app.readme_figures [--store runs/gradprobe.sqlite] [--out docs/img]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from rich.console import Console

#: file name -> (section id, figure kind): the first such figure of the study report.
README_FIGURES = {
    "depth-sigmoid.png": ("depth", "theory_layers"),
    "phase-diagram-tanh.png": ("init", "phase_diagram"),
    "training-remedies.png": ("training", "training_curves"),
}


def readme_figures(store: str | Path | None, out: Path, dpi: int = 110) -> list[Path]:
    """Write :data:`README_FIGURES` into ``out``; returns the paths."""
    import torch

    from gradprobe.app.demo import FULL, run_sweeps
    from gradprobe.app.study import study_report
    from gradprobe.report.data import load_records
    from gradprobe.report.figures import render
    from gradprobe.store import Store

    torch.set_num_threads(1)
    with Store(store) as db:
        ids = run_sweeps(FULL, db, progress=False, console=Console(file=io.StringIO()))
        groups = {g: load_records(db, runs=run_ids) for g, run_ids in ids.items()}
    report = study_report(groups)
    sections = {s.id: s for s in report.sections}
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (section, kind) in README_FIGURES.items():
        spec = next(f for f in sections[section].figures() if f.kind == kind)
        path = out / name
        render(spec).savefig(path, dpi=dpi, metadata={"Software": None})
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: ``python -m gradprobe.app.readme_figures``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None,
                        help="run store (default: $GRADPROBE_STORE or runs/gradprobe.sqlite)")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args(argv)
    for path in readme_figures(args.store, args.out):
        print(path)


if __name__ == "__main__":
    main()
