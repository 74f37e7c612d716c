"""The HTML report: self-contained, every figure has data, and its numbers are the store's."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser

import pytest

from gradprobe.report.api import make_report
from gradprobe.report.build import build_report
from gradprobe.report.data import load_records
from gradprobe.report.html import plotly_js, render_html
from gradprobe.store import Store


class _Scan(HTMLParser):
    """Collects tags with their attributes, script bodies and section headings."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self.h2: list[str] = []
        self.cells: list[dict] = []
        self._in: str | None = None
        self._attrs: dict = {}
        self._buf: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag in ("script", "h2"):
            self._in, self._attrs, self._buf = tag, attrs, []
        if tag == "td":
            self.cells.append(attrs)

    def handle_data(self, data):
        if self._in:
            self._buf.append(data)

    def handle_endtag(self, tag):
        if tag == self._in == "script":
            self.scripts.append((self._attrs, "".join(self._buf)))
        elif tag == self._in == "h2":
            self.h2.append("".join(self._buf))
        if tag == self._in:
            self._in = None


@pytest.fixture(scope="module")
def page(records):
    report = build_report(records)
    text = render_html(report)
    scan = _Scan()
    scan.feed(text)
    return report, text, scan


def _has_finite_number(fig: dict) -> bool:
    """True when some trace of a Plotly figure holds a finite number (x, y or z)."""
    values = []
    for trace in fig["data"]:
        values += [v for row in trace.get("z") or [] for v in row]
        values += list(trace.get("x") or []) + list(trace.get("y") or [])
    return any(isinstance(v, float | int) and math.isfinite(v) for v in values)


def _figures(scan):
    return [json.loads(body) for attrs, body in scan.scripts
            if attrs.get("type") == "application/json"]


def test_no_external_script_stylesheet_or_url(page):
    _, text, scan = page
    for tag, attrs in scan.tags:
        assert "src" not in attrs or attrs["src"].startswith("data:"), (tag, attrs)
        assert tag != "link", attrs  # no external stylesheets (or anything else linked)
        for value in attrs.values():
            assert not re.match(r"\s*(https?:)?//", value or ""), (tag, attrs)
    style = text[text.index("<style>"):text.index("</style>")]
    assert "url(" not in style and "@import" not in style
    assert text.count(plotly_js()) == 1  # the library, embedded once


def test_every_figure_has_data_and_a_section(page):
    report, _, scan = page
    figs = _figures(scan)
    assert len(figs) == len(report.figures()) > 10
    for fig in figs:
        assert _has_finite_number(fig), fig["layout"]["title"]["text"]
    assert scan.h2 == [s.title for s in report.sections]
    assert {"Gradient flow across layers", "Gradient norms during training",
            "Activations and saturation", "Theory vs measured", "Phase diagram",
            "Jacobian spectrum"} <= set(scan.h2)


def test_gradient_flow_numbers_equal_the_store(page, report_store, records):
    _, _, scan = page
    path, _ = report_store
    flow = next(f for f in _figures(scan)
                if f["layout"]["title"]["text"] == "Backward signal per layer at initialisation")
    with Store(path) as db:
        for rec, trace in zip(records, flow["data"], strict=True):
            assert trace["name"] == rec.label
            stored = db.metrics(rec.id, "backward_signal_norm")
            first = stored[stored["step"] == 0].sort_values("depth")
            assert trace["y"] == first["value"].tolist()  # exact, not rounded


def test_table_numbers_equal_the_store(page, report_store):
    _, _, scan = page
    path, _ = report_store
    with Store(path) as db:
        runs = db.runs().set_index("id")
    cells = [c for c in scan.cells if c.get("data-key") == "final_test_accuracy"]
    assert len(cells) == len(runs)
    assert sorted(float(c["data-value"]) for c in cells) == \
        sorted(runs["final_test_accuracy"].tolist())


def test_make_report_writes_one_html_file(report_store, tmp_path):
    path, ids = report_store
    html = make_report(path, runs=[ids["sigmoid"]], output=tmp_path / "sub" / "r.html")
    assert html == [tmp_path / "sub" / "r.html"]
    assert html[0].read_text().startswith("<!DOCTYPE html>")


def test_runs_without_probe_or_diverged_still_report(tmp_path):
    """Nothing recorded per layer, or NaN losses: figures with nothing to draw are left out
    with a note, never drawn empty."""
    import gradprobe as gp

    store = tmp_path / "edge.sqlite"
    base = {"net": {"depth": 3, "width": 8}, "data": {"name": "iris"},
            "train": {"steps": 6, "loss": "mse"}}
    with Store(store) as db:
        gp.run({**base, "name": "no-probe"}, store=db, probe=False)
        diverged = gp.run({**base, "name": "diverged", "train": {**base["train"], "lr": 1e8},
                           "net": {**base["net"], "init": {"name": "normal", "sigma_w2": 50}}},
                          store=db)
    assert diverged.status == "diverged"
    only = build_report(load_records(store, runs=["no-probe"]))
    assert all(f.has_data() for f in only.figures())
    # nothing per layer was recorded: only what the losses and the spec give
    assert {f.kind for f in only.figures()} == {
        "activation_curves", "training_curves", "steps_to_threshold", "accuracy",
        "phase_diagram", "jacobian"}
    path = make_report(store, all_runs=True, output=tmp_path / "edge.html")[0]
    scan = _Scan()
    scan.feed(path.read_text())
    figs = _figures(scan)
    assert figs
    for fig in figs:
        assert _has_finite_number(fig), fig["layout"]["title"]["text"]
