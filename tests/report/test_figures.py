"""Every figure kind renders, statically (matplotlib, headless) and interactively (Plotly),
from the frames of real stored runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from matplotlib.figure import Figure

from gradprobe.report import figures, plotly_figures
from gradprobe.report.build import build_report
from gradprobe.report.content import FIGURE_KINDS, FigureSpec


@pytest.fixture(scope="module")
def report(records):
    from gradprobe.reproduce.base import Reproduction, series, within

    classic = Reproduction(  # a stored reproduction, as gradprobe reproduce --save writes it
        "he2015", "He et al. 2015", "citation", "scale", [within("factor", 0.5, 0.51, rel=0.1)],
        {"title": "Backward factor", "xlabel": "layer", "ylabel": "log10",
         "series": [series("measured", [1, 2, 3], [-1.0, -0.5, 0.0]),
                    series("paper", [1, 2, 3], [-0.6, -0.3, 0.0], "theory")]})
    return build_report(records, classics=[classic])


def test_every_kind_has_both_renderers():
    assert set(figures.RENDERERS) == set(FIGURE_KINDS)
    assert set(plotly_figures.RENDERERS) == set(FIGURE_KINDS)


def test_the_generic_report_uses_every_kind(report):
    assert {f.kind for f in report.figures()} == set(FIGURE_KINDS)
    assert all(f.has_data() for f in report.figures())


def test_matplotlib_renders_every_kind(report, tmp_path):
    first = {}
    for spec in report.figures():
        first.setdefault(spec.kind, spec)
        fig = figures.render(spec)
        assert isinstance(fig, Figure) and fig.axes, spec.kind
        drawn = sum(len(ax.lines) + len(ax.collections) + len(ax.patches) for ax in fig.axes)
        assert drawn > 0, spec.kind
    for kind, spec in first.items():  # drawing to pixels and to vectors, once per kind
        fmt = "svg" if kind in ("heatmap", "phase_diagram") else "png"
        figures.render(spec).savefig(tmp_path / f"{kind}.{fmt}", format=fmt, dpi=60)
    assert len(list(tmp_path.iterdir())) == len(FIGURE_KINDS)


def test_plotly_renders_every_figure_with_data(report):
    for spec in report.figures():
        fig = plotly_figures.render(spec)
        finite = [v for trace in fig.data for v in (trace.y if trace.type != "heatmap"
                                                     else [x for r in trace.z for x in r])
                  if v is not None]
        assert finite, spec.kind
        assert fig.layout.title.text == spec.title


def test_legends_name_configurations_in_words(report):
    flow = next(f for f in report.figures() if f.kind == "gradient_flow")
    names = [t.name for t in plotly_figures.render(flow).data]
    assert "6-layer sigmoid, Xavier" in names and "6-layer ReLU, He" in names
    ax = figures.render(flow).axes[0]
    assert "6-layer sigmoid, Xavier" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.get_yscale() == "log" and "‖" in ax.get_ylabel()


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown figure kind"):
        FigureSpec("pie", "t", {})


def test_static_figures_render_headless(report_store, tmp_path):
    """No display, no backend chosen: the object API draws anyway (CI, servers)."""
    path, ids = report_store
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND",
                                                            "WAYLAND_DISPLAY")}
    code = (
        "import sys; from gradprobe.report.data import load_records; "
        "from gradprobe.report.build import flow_figures, heatmap_figures; "
        "from gradprobe.report.figures import render; "
        f"records = load_records({str(path)!r}, runs=[{ids['relu']!r}]); "
        "figs = flow_figures(records, 'init') + flow_figures(records, 'end') "
        "+ heatmap_figures(records); "
        f"[render(f).savefig({str(tmp_path)!r} + f'/{{i}}.png', dpi=60) "
        "for i, f in enumerate(figs)]; "
        "print(len(figs)); assert 'matplotlib.pyplot' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == int(done.stdout.strip()) == 3
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
