"""What a report holds, independent of how it is drawn.

A :class:`Report` is a list of :class:`Section` objects; a section holds text, tables and
:class:`FigureSpec` objects. A figure spec names a figure *kind* and carries the tidy frames
it draws (made by :mod:`gradprobe.report.data`), so the same spec renders as an interactive
Plotly chart (:mod:`gradprobe.report.plotly_figures`) and as a static matplotlib figure
(:mod:`gradprobe.report.figures`).

Figure kinds and the data each needs:

====================  ==========================================================
kind                  data
====================  ==========================================================
gradient_flow         ``flow`` (:func:`~gradprobe.report.data.flow_frame`)
heatmap               ``cells``: step, depth, value, label (one panel per label)
activation_curves     ``curves``, ``regions``, optional ``stats``
training_curves       ``curves`` (:func:`~gradprobe.report.data.curve_frame`),
                      ``headline`` (thresholds)
steps_to_threshold    ``headline``
accuracy              ``headline``
theory_layers         ``layers`` (:func:`~gradprobe.report.theory_data.theory_frame`)
depth_scaling         ``depths`` (:func:`~gradprobe.report.theory_data.depth_frame`)
phase_diagram         ``grid`` (:class:`~gradprobe.report.theory_data.PhaseGrid`),
                      ``points``
jacobian              ``spectrum`` (:func:`~gradprobe.report.theory_data.jacobian_frame`)
classic               ``figure`` (a stored reproduction's figure dict,
                      :mod:`gradprobe.report.classics`)
====================  ==========================================================

Example:
    >>> import pandas as pd
    >>> spec = FigureSpec("accuracy", "Final accuracy", {"headline": pd.DataFrame()})
    >>> spec.has_data()
    False
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

#: Every figure kind, and the frame in ``data`` that must be non-empty for it to be drawn.
PRIMARY_FRAME = {
    "gradient_flow": "flow", "heatmap": "cells", "activation_curves": "curves",
    "training_curves": "curves", "steps_to_threshold": "headline", "accuracy": "headline",
    "theory_layers": "layers", "depth_scaling": "depths", "phase_diagram": "grid",
    "jacobian": "spectrum", "classic": "figure",
}
FIGURE_KINDS = tuple(PRIMARY_FRAME)


def renderers(namespace: Mapping[str, Any]) -> dict[str, Callable[[Any], Any]]:
    """A renderer module's drawing functions, one per kind, found by the kind's name.

    Every renderer (matplotlib, Plotly) names its functions after the kinds; a missing one
    fails when the module is imported, not when a report first needs it.
    """
    missing = [kind for kind in FIGURE_KINDS if not callable(namespace.get(kind))]
    if missing:
        raise ImportError(f"{namespace.get('__name__')} draws no {', '.join(missing)}")
    return {kind: namespace[kind] for kind in FIGURE_KINDS}


def slugify(text: str) -> str:
    """``"Gradient flow at init"`` -> ``"gradient-flow-at-init"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "figure"


@dataclass
class FigureSpec:
    """One figure: its kind, title, the frames it draws, and a caption in words."""

    kind: str
    title: str
    data: dict[str, Any]
    caption: str = ""
    slug: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in FIGURE_KINDS:
            raise ValueError(f"unknown figure kind {self.kind!r} (allowed: {FIGURE_KINDS})")
        self.slug = self.slug or slugify(self.title)

    def has_data(self) -> bool:
        """True when the frame this kind draws is present and not empty."""
        primary = self.data.get(PRIMARY_FRAME[self.kind])
        if primary is None:
            return False
        if isinstance(primary, pd.DataFrame):
            return not primary.empty
        return True


@dataclass
class TableSpec:
    """A table: ``columns`` maps frame columns to headers; ``formats`` to formatters."""

    title: str
    frame: pd.DataFrame
    columns: dict[str, str]
    caption: str = ""


@dataclass
class Text:
    """Paragraphs of plain text (blank lines separate paragraphs), then a bulleted list of
    ``items``; ``pre`` keeps the text's layout (monospace)."""

    text: str
    pre: bool = False
    items: list[str] = field(default_factory=list)


Block = FigureSpec | TableSpec | Text


@dataclass
class Section:
    """A titled part of a report."""

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    def figures(self) -> list[FigureSpec]:
        """The section's figure specs, in order."""
        return [b for b in self.blocks if isinstance(b, FigureSpec)]


@dataclass
class Report:
    """A whole report: a title, a line under it, and sections."""

    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    def figures(self) -> list[FigureSpec]:
        """Every figure spec, in order."""
        return [f for s in self.sections for f in s.figures()]
