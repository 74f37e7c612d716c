"""``gradprobe demo --quick``: the study end to end, small. It stores every run, prints the
headline table and ends with the report's path; the report shows every section and its
numbers are the store's."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from gradprobe.app.demo import QUICK, sweep_specs
from gradprobe.cli import app
from gradprobe.store import Store

SECTIONS = [
    "Overview",
    "1. Depth: gradients vanish exponentially",
    "2. Activations: saturation and dead units",
    "3. Initialisation: ordered, critical, chaotic",
    "4. Remedies against the plain baseline",
    "5. Impact on training",
    "6. Diagnosis and verified repair",
    "7. Adaptive remedy",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Run the quick demo once through the CLI; (output, store path, report path)."""
    tmp = tmp_path_factory.mktemp("demo")
    store, out = tmp / "runs.sqlite", tmp / "reports"
    result = CliRunner().invoke(app, ["demo", "--quick", "--store", str(store),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return result.output, store, out / "report.html"


def test_demo_ends_with_the_report_path(demo):
    output, _, report = demo
    last = output.strip().splitlines()[-1]
    assert last == f"report: {report}"
    assert report.is_file() and report.stat().st_size > 1_000_000
    assert "Training on digits" in output and "theory" in output  # the headline tables


def test_demo_stores_every_sweep(demo):
    _, store, _ = demo
    specs = sweep_specs(QUICK)
    with Store(store) as db:
        runs = db.runs()
    for group, spec in specs.items():
        mine = runs[runs["sweep"] == spec["name"]]
        expected = 1
        for values in [*spec.get("grid", {}).values(), *[next(iter(spec["zip"].values()))]]:
            expected *= len(values)
        assert len(mine) == expected, group
        assert (mine["status"] == "complete").all(), group


def _figures(html: str) -> list[dict]:
    return [json.loads(m.replace("<\\/", "</")) for m in re.findall(
        r'<script type="application/json" id="gp-fig-\d+-data">(.*?)</script>', html, re.S)]


def test_report_shows_every_section_with_data(demo):
    _, _, report = demo
    html = report.read_text()
    assert re.findall(r"<h2>(.*?)</h2>", html) == SECTIONS
    figs = _figures(html)
    assert len(figs) >= 15
    for fig in figs:
        numbers = [v for t in fig["data"] for key in ("x", "y")
                   for v in (t.get(key) or []) if isinstance(v, int | float)]
        numbers += [v for t in fig["data"] for row in (t.get("z") or []) for v in row
                    if v is not None]
        assert numbers, fig["layout"]["title"]["text"]
    assert "Verified repairs" in html and "Findings" in html


def test_report_numbers_equal_the_store(demo):
    _, store, report = demo
    html = report.read_text()
    with Store(store) as db:
        runs = db.runs().set_index("id")
        rows = [r for r in re.findall(r"<tr>(.*?)</tr>", html) if 'data-key="run"' in r]
        assert len(rows) >= 2 * 12  # two headline tables of the trained configurations
        for row in rows:
            run_id = re.search(r'data-key="run">(\w+)<', row).group(1)
            for key in ("final_loss", "final_train_accuracy", "final_test_accuracy"):
                shown = re.search(rf'data-key="{key}" data-value="([^"]+)"', row).group(1)
                assert float(shown) == runs.loc[run_id, key], (run_id, key)
        # the depth study's markers are the stored backward signal, exactly
        depth_fig = next(f for f in _figures(html)
                         if f["layout"]["title"]["text"].startswith("sigmoid: backward signal"))
        trace = depth_fig["data"][0]
        assert trace["name"] == "4-layer sigmoid, Xavier (measured)"
        depth_runs = db.runs(sweep=QUICK.sweep_name("depth"))
        run_id = next(r.id for r in depth_runs.itertuples()
                      if json.loads(r.spec_json)["net"]["depth"] == 4
                      and json.loads(r.spec_json)["net"]["activation"]["name"] == "sigmoid")
        stored = db.metrics(run_id, "backward_signal_norm").sort_values("depth")
        assert trace["y"] == stored[stored["step"] == 0]["value"].tolist()


def test_demo_resumes_from_the_store(demo, tmp_path):
    _, store, _ = demo
    with Store(store) as db:
        before = len(db.runs())
    result = CliRunner().invoke(app, ["demo", "--quick", "--store", str(store), "--out",
                                      str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "0 configurations" in result.output  # nothing trained twice
    with Store(store) as db:
        assert len(db.runs()) == before
