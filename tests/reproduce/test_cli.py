"""gradprobe reproduce: listing, JSON contract, exit codes, bad names, the HTML report."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from gradprobe.cli.app import app
from gradprobe.reproduce import base, names, runner

cli = CliRunner()


def test_list_names_every_entry():
    result = cli.invoke(app, ["reproduce", "--list"])
    assert result.exit_code == 0
    for name in ("he2015", "glorot2010", "schoenholz2017", "hanin2018", "pennington2017",
                 "yang2019", "saxe2014"):
        assert name in result.output
    assert len(names()) == 7


def test_unknown_name_is_one_line_and_exit_2():
    result = cli.invoke(app, ["reproduce", "hinton2006"])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "hinton2006" in lines[0] and "he2015" in lines[0]
    assert "Traceback" not in result.output


def _fake_entry(ok: bool) -> base.Entry:
    def run(quick: bool):
        claims = [base.within("a factor", 0.5, 0.5, rel=0.01),
                  base.within("another", 1.0, 1.0 if ok else 2.0, rel=0.1)]
        return claims, {"title": "t", "xlabel": "x", "ylabel": "y",
                        "series": [base.series("m", [1, 2], [1.0, 2.0])]}

    return base.Entry("fake", "Fake 2020", "A. Fake. 2020", "a fake entry", run,
                      lambda quick: "tiny")


def test_json_has_exactly_the_contract_keys_and_exit_code_follows_verdicts(monkeypatch,
                                                                           tmp_path):
    for ok, code in ((True, 0), (False, 1)):
        monkeypatch.setattr(runner, "get_entry", lambda name, ok=ok: _fake_entry(ok))
        result = cli.invoke(app, ["reproduce", "fake", "--quick", "--json"])
        assert result.exit_code == code, result.output
        payload = json.loads(result.output)
        assert set(payload) == {"name", "claims"} and payload["name"] == "fake"
        for claim in payload["claims"]:
            assert set(claim) == {"claim", "paper", "measured", "tolerance", "ok"}
        assert [c["ok"] for c in payload["claims"]] == [True, ok]


def test_table_report_and_saved_record(monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "get_entry", lambda name: _fake_entry(False))
    html, store = tmp_path / "r.html", tmp_path / "store"
    result = cli.invoke(app, ["reproduce", "fake", "-o", str(html), "--save", str(store)])
    assert result.exit_code == 1
    assert "NOT REPRODUCED" in result.output and "1/2 claims hold" in result.output
    text = html.read_text()
    assert "Classic results: Fake 2020" in text and "not reproduced" in text
    saved = json.loads((store / "fake.json").read_text())
    assert saved["claims"][1]["measured"] == 2.0 and saved["figure"]["series"][0]["y"] == [1, 2]


def test_demo_step_runs_quick_entries_and_stores_them(tmp_path, monkeypatch):
    from rich.console import Console

    from gradprobe.app.demo import classics_chapter

    console = Console(record=True, width=120)
    reps = runner.run_quick_classics(tmp_path, console, names=["hanin2018"])
    assert [r.name for r in runner.load(tmp_path)] == ["hanin2018"] and reps[0].quick
    assert "reproduce hanin2018: 3/3 claims hold" in console.export_text()
    monkeypatch.setattr(runner, "run_quick_classics", lambda directory, console: reps)
    sections = classics_chapter(tmp_path, console)  # what the demo appends to its report
    assert [s.id for s in sections] == ["classic-hanin2018"]
