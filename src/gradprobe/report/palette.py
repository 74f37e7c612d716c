"""A colour-blind-safe palette shared by the static and the interactive figures.

Lines and bars use the Okabe-Ito palette (Okabe & Ito 2008, "Color Universal Design"): eight
colours that stay distinct under the common forms of colour blindness. Lines use six of them
(yellow is too faint as a thin line on white; black is kept for references such as theory
lines and thresholds). Beyond six configurations colours repeat with a new dash pattern, and
every line also gets a marker: two lines never differ by colour alone. Heat maps use
``cividis``, a sequential map designed to read the same with and without colour-vision
deficiency, and to print well in grey.

Example:
    >>> color(0), color(6) == color(0)
    ('#0072B2', True)
    >>> style(7)["dash"] != style(1)["dash"]
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

#: Okabe-Ito, black last (it is used for references such as theory lines).
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#F0E442",  # yellow
    "#000000",  # black
)
#: Six line colours: yellow is hard to see on white as a thin line, black is the reference.
LINE_COLORS: tuple[str, ...] = tuple(c for c in OKABE_ITO if c not in ("#F0E442", "#000000"))
REFERENCE = "#000000"
GRID = "#DDDDDD"
#: Shading of regions (saturated, dead) behind curves.
SHADE_SATURATED = "#E69F00"
SHADE_DEAD = "#999999"
#: Phases of the mean-field phase diagram.
PHASE_COLORS = {"ordered": "#0072B2", "critical": "#000000", "chaotic": "#D55E00"}
SEQUENTIAL = "cividis"  # matplotlib name; Plotly knows it as "Cividis"
SEQUENTIAL_PLOTLY = "Cividis"

_MPL_DASHES = ("-", "--", "-.", ":")
_PLOTLY_DASHES = ("solid", "dash", "dashdot", "dot")
_MPL_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_PLOTLY_MARKERS = ("circle", "square", "triangle-up", "diamond", "triangle-down", "cross", "x")


def color(i: int) -> str:
    """The ``i``-th line colour (cycles after six)."""
    return LINE_COLORS[i % len(LINE_COLORS)]


def style(i: int) -> dict[str, Any]:
    """Colour, dash and marker of the ``i``-th line, in both libraries' vocabularies.

    Dashes change once per full colour cycle, so lines 0 and 6 share a colour but not a dash.
    """
    cycle = i // len(LINE_COLORS)
    return {
        "color": color(i),
        "linestyle": _MPL_DASHES[cycle % len(_MPL_DASHES)],
        "dash": _PLOTLY_DASHES[cycle % len(_PLOTLY_DASHES)],
        "marker": _MPL_MARKERS[i % len(_MPL_MARKERS)],
        "symbol": _PLOTLY_MARKERS[i % len(_PLOTLY_MARKERS)],
    }


def styled_groups(frame: Any, key: str = "label") -> Iterator[tuple[dict[str, Any], Any, Any]]:
    """``(style, value, rows)`` per value of ``frame[key]`` in order of appearance.

    Example:
        >>> import pandas as pd
        >>> [(st["color"], v) for st, v, _ in styled_groups(pd.DataFrame({"label": ["b", "a"]}))]
        [('#0072B2', 'b'), ('#E69F00', 'a')]
    """
    for i, (value, rows) in enumerate(frame.groupby(key, sort=False)):
        yield style(i), value, rows
