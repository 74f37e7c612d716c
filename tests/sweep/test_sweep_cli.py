"""``gradprobe sweep`` through the real CLI app (typer's CliRunner)."""

from __future__ import annotations

import pytest
import yaml
from sweep_helpers import small
from typer.testing import CliRunner

from gradprobe.cli import app
from gradprobe.store import Store

runner = CliRunner()


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "study", "base": small(**{"train.steps": 4}),
        "grid": {"net.activation": ["tanh", "relu"], "net.norm": ["none", "layer"]},
    }))
    return path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_sweep_then_resume(spec_file, store_path) -> None:
    result = invoke("sweep", spec_file, "--store", store_path)
    assert result.exit_code == 0, result.output
    assert "4 configurations: 2 vectorised in 1 group, 2 one by one (layer norm)" in result.output
    assert "4 complete" in result.output
    again = invoke("sweep", spec_file, "--store", store_path)
    assert again.exit_code == 2
    assert "already has 4 runs" in again.output and "--resume" in again.output
    resumed = invoke("sweep", spec_file, "--store", store_path, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "4 already stored" in resumed.output
    with Store(store_path) as db:
        assert len(db.runs(sweep="study")) == 4
    listed = invoke("runs", "--store", store_path, "--sweep", "study")
    assert listed.exit_code == 0 and "study" in listed.output


def test_set_overrides_the_sweep_file(spec_file, store_path) -> None:
    result = invoke("sweep", spec_file, "--store", store_path, "--quiet",
                    "--set", "name=other", "--set", "base.train.steps=2")
    assert result.exit_code == 0, result.output
    with Store(store_path) as db:
        runs = db.runs(sweep="other")
        assert len(runs) == 4
        assert db.run(runs["id"].iloc[0])["summary"]["steps_run"] == 2


@pytest.mark.parametrize("args, message", [
    (["--set", "grid.net.dpth=[3]"], "net.dpth: unknown key"),
    (["--backend", "slurm"], "unknown backend 'slurm'"),
    (["--address", "auto"], "--address is for the ray backend"),
    (["--set", "zip={net.depth: [2, 3], train.lr: [0.1]}"], "equal lengths"),
])
def test_bad_input_exits_2_with_one_line(spec_file, store_path, args, message) -> None:
    result = invoke("sweep", spec_file, "--store", store_path, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_file_exits_2(tmp_path, store_path) -> None:
    result = invoke("sweep", tmp_path / "nope.yaml", "--store", store_path)
    assert result.exit_code == 2 and "not found" in result.output


def test_ctrl_c_says_how_to_resume(spec_file, store_path, monkeypatch) -> None:
    from gradprobe.sweeps import runner as sweep_runner

    real = sweep_runner.SweepProgress.run_done

    def interrupt_after_first(self):
        real(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_runner.SweepProgress, "run_done", interrupt_after_first)
    result = invoke("sweep", spec_file, "--store", store_path, "--quiet")
    assert result.exit_code == 130
    assert "--resume" in result.output
    with Store(store_path) as db:
        assert len(db.runs(sweep="study")) == 1
