"""The shared progress bar: shown only on a fake_tty, counts the work, used by long jobs."""

from __future__ import annotations

import io

import pytest

import gradprobe as gp
import gradprobe.progress as progress
from gradprobe.nets.plain import build
from gradprobe.spec import load_spec
from gradprobe.sweeps.progress import SweepProgress


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def fake_tty(monkeypatch):
    fake = FakeTty()
    monkeypatch.setattr(progress, "_stderr", lambda: fake)  # pytest's capture owns sys.stderr
    return fake


@pytest.fixture
def bars(monkeypatch):
    """Every ProgressBar made, to read its count afterwards."""
    made = []
    real_init = progress.ProgressBar.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(progress.ProgressBar, "__init__", init)
    return made


def test_not_a_fake_tty_draws_nothing(monkeypatch):
    fake = io.StringIO()
    monkeypatch.setattr("sys.stderr", fake)
    with progress.ProgressBar(True, "work", total=4) as bar:
        bar.advance(4)
    assert not bar.shown and bar.completed == 4
    assert fake.getvalue() == ""


def test_fake_tty_shows_time_left(fake_tty):
    with progress.ProgressBar(True, "work", total=4) as bar:
        bar.advance(3)
    assert bar.shown
    out = fake_tty.getvalue()
    assert "work" in out and "3/4" in out and "ETA" in out


def test_disabled_on_fake_tty_draws_nothing(fake_tty):
    with SweepProgress(False, "s", total_steps=10, total_runs=2) as bar:
        bar.advance(10)
        bar.run_done()
    assert fake_tty.getvalue() == ""


def small_model():
    spec = load_spec({"net": {"depth": 3, "width": 8}, "data": {"name": "digits"}})
    return build(spec.net, (64,), 10, seed=0)


def test_repair_bar_counts_every_candidates_steps(fake_tty, bars):
    names = ["init he_normal", "lr x10"]
    result = gp.repair(small_model(), "digits", budget_steps=4, candidates=names,
                       progress=True)
    (bar,) = bars
    assert len(result.table) + len(result.skipped) == 3
    last = result.runs.get(names[-1])
    # earlier candidates are topped up to their budget; the last one counts its own steps
    assert bar.completed == 2 * 4 + (last.steps if last is not None else 0)
    assert "repair" in fake_tty.getvalue() and "ETA" in fake_tty.getvalue()


def test_diagnose_bar_counts_training_steps(fake_tty, bars):
    diag = gp.diagnose(small_model(), "digits", steps=5, progress=True)
    (bar,) = bars
    assert bar.completed == diag.evidence.training.steps == 5
    assert "diagnose" in fake_tty.getvalue()


def test_sweep_bar_counts_member_steps(fake_tty, bars):
    spec = {"name": "p", "base": {"net": {"depth": 3, "width": 8}, "data": {"name": "iris"},
                                  "train": {"steps": 3}},
            "grid": {"train.seed": [0, 1, 2]}}
    gp.sweep(spec, store=":memory:", progress=True)
    (bar,) = bars
    assert bar.completed == 3 * 3
    assert "runs 3/3" in bar.description
