import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from gradprobe.cli import app
from gradprobe.store import Store

from .conftest import tiny_spec

runner = CliRunner()


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec()))
    return path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_run_runs_show_export(spec_file, store_path, tmp_path):
    result = invoke("run", spec_file, "--store", store_path, "--set", "net.depth=3")
    assert result.exit_code == 0, result.output
    assert "signal@0" in result.output and "block1.linear" in result.output  # per-layer table
    listing = invoke("runs", "--store", store_path)
    assert listing.exit_code == 0 and "tiny" in listing.output and "complete" in listing.output
    shown = invoke("show", "tiny", "--store", store_path)
    assert shown.exit_code == 0 and "3-layer tanh MLP" in shown.output

    csv_path = tmp_path / "m.csv"
    assert invoke("export", "tiny", "--store", store_path, "-o", csv_path).exit_code == 0
    exported = pd.read_csv(csv_path, keep_default_na=False)
    assert list(exported.columns) == ["step", "layer", "depth", "quantity", "value"]
    assert (exported["quantity"] == "loss").sum() == 12

    as_json = invoke("export", "tiny", "--store", store_path, "--format", "json")
    payload = json.loads(as_json.stdout)
    assert payload["run"]["status"] == "complete"
    assert len(payload["metrics"]) == len(exported)

    parquet = tmp_path / "m.parquet"
    assert invoke("export", "tiny", "--store", store_path, "-f", "parquet",
                  "-o", parquet).exit_code == 0
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), exported, check_dtype=False)


@pytest.mark.parametrize("args, message", [
    (["--set", "net.dpth=3"], "net.dpth: unknown key"),
    (["--set", "net.activation=swish"], "unknown activation 'swish'"),
    (["--set", "net.depth=-2"], "net.depth: Input should be greater than or equal to 1"),
    (["--set", "data.name=csv", "--set", "data.path=/nope.csv"], "file not found: /nope.csv"),
    (["--set", "train.device=tpu"], "train.device: must be one of 'cpu', 'cuda' or 'auto'"),
])
def test_bad_input_exits_2_with_one_line(spec_file, store_path, args, message):
    result = invoke("run", spec_file, "--store", store_path, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_spec_and_unknown_run(store_path, tmp_path):
    result = invoke("run", tmp_path / "none.yaml")
    assert result.exit_code == 2 and "spec file not found" in result.output
    result = invoke("show", "nothing-here", "--store", store_path)
    assert result.exit_code == 2 and "no run store at" in result.output
    assert not Path(store_path).exists()  # reading never creates a store
    Store(store_path).close()
    result = invoke("show", "nothing-here", "--store", store_path)
    assert result.exit_code == 2 and "no run 'nothing-here'" in result.output
    result = invoke("export", "x", "--format", "xml", "--store", store_path)
    assert result.exit_code == 2 and "allowed: csv, json, parquet" in result.output


def test_every_command_is_documented():
    import typer.main

    group = typer.main.get_command(app)
    assert set(group.commands) >= {"run", "runs", "show", "export", "demo"}
    docs = (__import__("pathlib").Path(__file__).parents[1] / "docs" / "cli.md").read_text()
    for name, command in group.commands.items():
        assert command.help, f"command {name} has no help text"
        assert f"gradprobe {name}" in docs, f"docs/cli.md does not document {name}"
