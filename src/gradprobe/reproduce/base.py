"""What a reproduction is: an entry (the paper, its claims, a runner) and its result.

A :class:`Claim` puts the paper's number beside the measured one with the tolerance the
entry states; a :class:`Reproduction` is one run of an entry, with the series its figure
is redrawn from (``figure``), so the report never needs the live experiment.

Example:
    >>> c = within("factor per layer", paper=0.5, measured=0.51, rel=0.05)
    >>> c.ok, c.tolerance
    (True, '±5%')
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Claim:
    """One claim: the paper's value, the measured one, the tolerance and the verdict."""

    claim: str
    paper: float | str
    measured: float | str
    tolerance: str
    ok: bool

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape: ``{"claim", "paper", "measured", "tolerance", "ok"}``."""
        return asdict(self)


def _round(x: float) -> float:
    return float(f"{x:.4g}") if math.isfinite(x) else x


def within(claim: str, paper: float, measured: float, *, rel: float) -> Claim:
    """``|measured / paper - 1| <= rel``.

    Example:
        >>> within("slope", 2.0, 2.5, rel=0.1).ok
        False
    """
    ok = math.isfinite(measured) and abs(measured / paper - 1.0) <= rel
    return Claim(claim, _round(paper), _round(measured), f"±{100 * rel:.2g}%", bool(ok))


def at_most(claim: str, paper: str, measured: float, bound: float) -> Claim:
    """``measured <= bound`` (the paper's statement in words, the bound as tolerance)."""
    ok = math.isfinite(measured) and measured <= bound
    return Claim(claim, paper, _round(measured), f"<= {bound:.4g}", bool(ok))


def at_least(claim: str, paper: str, measured: float, bound: float) -> Claim:
    """``measured >= bound``."""
    ok = math.isfinite(measured) and measured >= bound
    return Claim(claim, paper, _round(measured), f">= {bound:.4g}", bool(ok))


def between(claim: str, paper: str, measured: float, lo: float, hi: float) -> Claim:
    """``lo <= measured <= hi``."""
    ok = math.isfinite(measured) and lo <= measured <= hi
    return Claim(claim, paper, _round(measured), f"in [{lo:.4g}, {hi:.4g}]", bool(ok))


@dataclass
class Reproduction:
    """One run of an entry: its claims and the data its figure is drawn from.

    ``figure``: ``{"title", "xlabel", "ylabel", "series": [{"label", "x", "y", "style"}],
    "logy"}``, each series a measured curve (``style`` "measured") or a theory/paper line
    (``style`` "theory").
    """

    name: str
    title: str
    citation: str
    scale: str
    claims: list[Claim]
    figure: dict[str, Any] = field(default_factory=dict)
    quick: bool = False
    seconds: float = math.nan

    @property
    def ok(self) -> bool:
        """All claims hold."""
        return all(c.ok for c in self.claims)

    def as_json(self) -> dict[str, Any]:
        """``{"name", "claims": [...]}``, the CLI's ``--json`` contract."""
        return {"name": self.name, "claims": [c.as_dict() for c in self.claims]}

    def as_record(self) -> dict[str, Any]:
        """Everything, for storing and for the report."""
        return self.as_json() | {"title": self.title, "citation": self.citation,
                                 "scale": self.scale, "figure": self.figure,
                                 "quick": self.quick, "seconds": self.seconds}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Reproduction:
        """Inverse of :meth:`as_record`."""
        claims = [Claim(**c) for c in record["claims"]]
        return cls(record["name"], record["title"], record["citation"], record["scale"], claims,
                   record.get("figure", {}), record.get("quick", False),
                   record.get("seconds", math.nan))


@dataclass(frozen=True)
class Entry:
    """A paper and how to reproduce it.

    ``run(quick)`` returns ``(claims, figure)``; ``scale(quick)`` says in words what it runs
    (widths, depths, seeds, steps) so a reader can weigh the tolerances.
    """

    name: str
    title: str
    citation: str
    summary: str
    run: Callable[[bool], tuple[list[Claim], dict[str, Any]]]
    scale: Callable[[bool], str]


def series(label: str, x: Any, y: Any, style: str = "measured") -> dict[str, Any]:
    """One curve of a figure, as plain lists (JSON-ready)."""
    return {"label": label, "x": [float(v) for v in x], "y": [float(v) for v in y],
            "style": style}


def near(claim: str, paper: float, measured: float, tol: float) -> Claim:
    """``|measured - paper| <= tol`` (an absolute tolerance)."""
    ok = math.isfinite(measured) and abs(measured - paper) <= tol
    return Claim(claim, _round(paper), _round(measured), f"±{tol:.3g}", bool(ok))
