"""The thread policy: chosen counts, the override, and the caller's count restored."""

from __future__ import annotations

import pytest
import torch

import gradprobe as gp
from gradprobe.errors import UserError
from gradprobe.threads import SMALL_MODEL_PARAMS, choose_threads, thread_policy

SMALL = {"net": {"depth": 3, "width": 8}, "data": {"name": "iris"}, "train": {"steps": 3}}


@pytest.fixture
def caller_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


def test_rule(caller_threads):
    assert choose_threads(SMALL_MODEL_PARAMS - 1, cores=16) == 1
    assert choose_threads(SMALL_MODEL_PARAMS, cores=16) == caller_threads
    assert choose_threads(SMALL_MODEL_PARAMS, cores=2) == 2
    assert choose_threads(10 * SMALL_MODEL_PARAMS, cores=1) == 1
    assert choose_threads(10, threads=5, cores=1) == 5


def test_threads_during_run_and_restored(caller_threads, monkeypatch):
    seen = []
    import gradprobe.api as api

    real = api.train

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "train", spy)
    gp.run(SMALL, store=":memory:")
    gp.run(SMALL, store=":memory:", threads=2)
    assert seen == [1, 2]
    assert torch.get_num_threads() == caller_threads


def test_restored_after_error(caller_threads):
    with pytest.raises(RuntimeError), thread_policy(None, n_params=10):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == caller_threads


def test_sweep_threads_per_task_and_restored(caller_threads, monkeypatch):
    import gradprobe.sweeps.backends as backends

    seen = []
    real = backends.run_task

    def spy(task, on_steps=None, on_outcome=None):
        seen.append(torch.get_num_threads())
        return real(task, on_steps, on_outcome)

    monkeypatch.setattr(backends, "run_task", spy)
    sweep = {"name": "t", "base": SMALL, "grid": {"train.seed": [0, 1]}}
    gp.sweep(sweep, store=":memory:")
    gp.sweep({**sweep, "name": "u"}, store=":memory:", threads=2)
    assert seen == [1, 2]
    assert torch.get_num_threads() == caller_threads


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_threads(bad):
    with pytest.raises(UserError, match="threads must be an integer >= 1"):
        gp.run(SMALL, store=":memory:", threads=bad)
    with pytest.raises(UserError, match="threads must be an integer >= 1"):
        gp.sweep({"name": "b", "base": SMALL, "grid": {"train.seed": [0]}}, store=":memory:",
                 threads=bad)


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_cli_threads_flag(tmp_path, command, caller_threads):
    import yaml
    from typer.testing import CliRunner

    from gradprobe.cli import app

    spec = SMALL if command == "run" else {"name": "c", "base": SMALL,
                                           "grid": {"train.seed": [0, 1]}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    store = tmp_path / "s.sqlite"
    bad = CliRunner().invoke(app, [command, str(path), "--store", str(store), "--threads", "0"])
    assert bad.exit_code == 2 and "threads must be an integer >= 1" in bad.output
    assert "Traceback" not in bad.output
    good = CliRunner().invoke(app, [command, str(path), "--store", str(store), "--threads",
                                    "2", "--quiet"])
    assert good.exit_code == 0, good.output
    assert torch.get_num_threads() == caller_threads
