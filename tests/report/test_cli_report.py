"""``gradprobe report``: a thin command; user mistakes are one line and exit code 2."""

from __future__ import annotations

from typer.testing import CliRunner

from gradprobe.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_report_html_by_name_and_all(report_store, tmp_path):
    path, ids = report_store
    out = tmp_path / "one.html"
    result = invoke("report", "relu", ids["sigmoid"][:8], "--store", path, "-o", out)
    assert result.exit_code == 0, result.output
    assert f"report written to {out}" in result.output and out.stat().st_size > 1_000_000
    result = invoke("report", "--all", "--store", path, "-o", tmp_path / "all.html")
    assert result.exit_code == 0, result.output


def test_report_png(report_store, tmp_path):
    path, _ = report_store
    result = invoke("report", "sigmoid", "--store", path, "--format", "png",
                    "-o", tmp_path / "figs")
    assert result.exit_code == 0, result.output
    assert "figures written to" in result.output
    assert len(list((tmp_path / "figs").glob("*.png"))) > 5


def test_report_user_errors(report_store, tmp_path):
    path, _ = report_store
    cases = [
        (["nope"], "no run 'nope'"),
        ([], "nothing to report"),
        (["--sweep", "missing"], "no sweep 'missing'"),
        (["sigmoid", "--format", "gif"], "unknown format 'gif'"),
        (["sigmoid", "--format", "png", "-o", tmp_path / "x.html"], "must be a folder"),
    ]
    for args, message in cases:
        result = invoke("report", *args, "--store", path)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output


def test_report_is_documented():
    result = invoke("report", "--help")
    assert result.exit_code == 0
    assert "--sweep" in result.output and "--format" in result.output
