"""Stored reproductions round-trip, and the Classic results chapter draws them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from gradprobe.errors import UserError
from gradprobe.report import figures, plotly_figures
from gradprobe.report.build import write_classics
from gradprobe.report.classics import classics_sections
from gradprobe.reproduce import base, load, save
from gradprobe.reproduce.schoenholz2017 import boundary_ratios


def _rep(name: str, heat: bool = False) -> base.Reproduction:
    fig = {"title": "fig", "xlabel": "x", "ylabel": "y", "logy": True,
           "series": [base.series("measured", [1, 2, 4], [0.5, 0.25, 0.125]) | {"err": [0.1] * 3},
                      base.series("theory", [1, 2, 4], [0.5, 0.25, 0.125], "theory")]}
    if heat:
        fig["heatmap"] = {"x": [1.0, 2.0], "y": [4, 8], "z": [[0.1, 0.2], [2.3, 0.3]],
                          "label": "loss"}
    return base.Reproduction(name, f"{name} title", "cite", "scale",
                             [base.near("c", 1.0, 1.05, 0.1), base.at_most("d", "~0", 0.5, 0.1)],
                             fig, quick=True, seconds=1.5)


def test_save_and_load_round_trip_in_registry_order(tmp_path):
    for name in ("yang2019", "he2015"):
        save(_rep(name), tmp_path)
    loaded = load(tmp_path)
    assert [r.name for r in loaded] == ["he2015", "yang2019"]
    assert loaded[0].as_record() == _rep("he2015").as_record()
    assert [c.ok for c in loaded[0].claims] == [True, False]
    with pytest.raises(UserError, match="no such directory"):
        load(tmp_path / "missing")


def test_chapter_draws_measured_and_theory_with_both_renderers(tmp_path):
    sections = classics_sections([_rep("he2015"), _rep("schoenholz2017", heat=True)])
    assert [s.id for s in sections] == ["classic-he2015", "classic-schoenholz2017"]
    for section in sections:
        (spec,) = section.figures()
        fig = plotly_figures.render(spec)
        assert [t.name for t in fig.data][-2:] == ["measured", "theory"]
        assert list(fig.data[-2].y) == [0.5, 0.25, 0.125]
        mpl = figures.render(spec)
        assert isinstance(mpl, Figure) and mpl.axes[0].get_title() == "fig"
    table = sections[0].blocks[1].frame
    assert table["verdict"].tolist() == ["ok", "not reproduced"]
    html = write_classics([_rep("he2015")], tmp_path / "c.html").read_text()
    assert "Classic results: he2015 title" in html and "1 of 2 claims hold" in html


def test_boundary_ratio_is_the_geometric_mid_depth_over_six_xi_c():
    trainable = np.array([[True, True, False], [True, False, False], [False, False, False]])
    ratios = boundary_ratios(trainable, (4, 8, 16), np.array([10.0, 8.0, 5.0]))
    assert ratios[0] == pytest.approx(math.sqrt(8 * 16) / 10)  # deepest trainable 8, next 16
    assert ratios[1] == pytest.approx(math.sqrt(4 * 8) / 8)
    assert math.isnan(ratios[2])  # nothing trainable: no boundary on the grid
