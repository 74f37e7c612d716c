"""``make_report``: stored runs in, an HTML file or a folder of static figures out.

Example:
    >>> import gradprobe as gp, tempfile, pathlib
    >>> store = gp.Store(":memory:")
    >>> _ = gp.run({"net": {"depth": 3, "width": 8}, "data": {"name": "iris"},
    ...             "train": {"steps": 4}}, store=store)
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "report.html"
    >>> make_report(store, all_runs=True, output=out)[0].name
    'report.html'
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gradprobe.errors import UserError
from gradprobe.report.build import build_report
from gradprobe.report.data import load_records
from gradprobe.store import Store

FORMATS = ("html", "png", "svg")


def default_output(fmt: str) -> Path:
    """``report.html`` for HTML, the folder ``figures`` for PNG/SVG."""
    return Path("report.html") if fmt == "html" else Path("figures")


def make_report(
    store: Store | str | Path | None = None,
    runs: Iterable[str] = (),
    sweep: str | None = None,
    all_runs: bool = False,
    output: Path | None = None,
    fmt: str = "html",
    title: str = "gradprobe report",
) -> list[Path]:
    """Write a report of the chosen runs; returns the files written.

    ``fmt="html"``: one self-contained file at ``output`` (default ``report.html``).
    ``fmt="png"`` or ``"svg"``: one file per figure in the folder ``output`` (default
    ``figures/``). Unknown runs, an unknown sweep, nothing chosen, or a bad format raise
    :class:`UserError`.
    """
    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format {fmt!r} (allowed: {', '.join(FORMATS)})")
    output = Path(output) if output is not None else default_output(fmt)
    if fmt != "html" and output.suffix.lower() in (".html", ".htm"):
        raise UserError(f"--format {fmt} writes one file per figure: -o must be a folder, "
                        f"not {output}")
    if fmt != "html" and output.exists() and not output.is_dir():
        raise UserError(f"-o {output} exists and is not a folder")
    owned = not isinstance(store, Store)
    db = Store(store) if owned else store
    try:
        records = load_records(db, runs=list(runs), sweep=sweep, all_runs=all_runs)
    finally:
        if owned:
            db.close()
    report = build_report(records, title=title)
    if fmt == "html":
        from gradprobe.report.html import write_html

        return [write_html(report, output)]
    from gradprobe.report.figures import write_static

    return write_static(report, output, fmt)
