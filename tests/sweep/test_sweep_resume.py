"""Interrupted sweeps keep every finished run, and --resume trains only what is missing.

Each test kills a sweep in a subprocess (SIGKILL: no cleanup at all), resumes it, and
compares the result with the same sweep run without interruption: the same set of runs,
none twice, the same numbers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml
from sweep_helpers import small

import gradprobe as gp
from gradprobe.store import Store

SPEC = {"name": "resumable", "group_size": 3, "base": small(**{"train.steps": 10}),
        "grid": {"net.activation": ["tanh", "relu"], "train.seed": [0, 1, 2, 3]}}


def run_script(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


def assert_same_sweep(store_a, store_b, sweep: str) -> None:
    """Same config keys, each once, with the same status, numbers and metrics."""
    with Store(store_a) as a, Store(store_b) as b:
        runs_a, runs_b = a.runs(sweep=sweep), b.runs(sweep=sweep)
        assert len(runs_a) == runs_a["config_key"].nunique()
        assert len(runs_b) == runs_b["config_key"].nunique()
        assert set(runs_a["config_key"]) == set(runs_b["config_key"])
        by_key = runs_b.set_index("config_key")
        for run in runs_a.itertuples():
            other = by_key.loc[run.config_key]
            assert run.status == other.status == "complete"
            np.testing.assert_allclose(run.final_loss, other.final_loss, rtol=1e-4)
            ma, mb = a.metrics(run.id), b.metrics(other.id)
            keys = ["step", "layer", "quantity"]
            assert ma[keys].values.tolist() == mb[keys].values.tolist(), run.name
            np.testing.assert_allclose(ma["value"], mb["value"], rtol=2e-4, atol=1e-5)


def test_kill_9_in_the_middle_of_a_group_then_resume(tmp_path) -> None:
    interrupted, reference = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    # Groups of 3, 3 and 2: the kill after the 4th stored run lands inside group two,
    # whose other members are trained but not stored.
    proc = run_script(f"""
        import os, signal
        import gradprobe as gp
        stored = []
        def on_run(row):
            stored.append(row)
            if len(stored) == 4:
                os.kill(os.getpid(), signal.SIGKILL)
        gp.sweep({SPEC!r}, store={str(interrupted)!r}, on_run=on_run)
    """)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with Store(interrupted) as db:
        assert len(db.runs(sweep="resumable")) == 4
    table = gp.sweep(SPEC, store=interrupted, resume=True)
    assert table.attrs["resumed"] == 4 and len(table) == 8
    assert (table["status"] == "complete").all()
    gp.sweep(SPEC, store=reference)
    assert_same_sweep(interrupted, reference, "resumable")


def test_kill_9_from_outside_then_resume(tmp_path) -> None:
    spec_file, store = tmp_path / "sweep.yaml", tmp_path / "runs.sqlite"
    spec = {**SPEC, "name": "outside", "group_size": 1,
            "base": small(**{"train.steps": 60})}
    spec_file.write_text(yaml.safe_dump(spec))
    cli = [sys.executable, "-c", "from gradprobe.cli import main; main()", "sweep",
           str(spec_file), "--store", str(store), "--quiet"]
    proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if store.exists():
                with Store(store) as db:
                    if len(db.runs(sweep="outside")) >= 2:
                        break
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    with Store(store) as db:
        stored = db.runs(sweep="outside")
    assert 2 <= len(stored) < 8, "the sweep finished before it could be killed"
    assert (stored["status"] == "complete").all()
    resumed = gp.sweep(spec, store=store, resume=True)
    assert resumed.attrs["resumed"] == len(stored) and (resumed["status"] == "complete").all()
    uninterrupted = tmp_path / "reference.sqlite"
    gp.sweep(spec, store=uninterrupted)
    assert_same_sweep(store, uninterrupted, "outside")


def test_ctrl_c_keeps_finished_runs(tmp_path) -> None:
    store = tmp_path / "c.sqlite"
    stored: list[dict] = []

    def ctrl_c_after_two(row: dict) -> None:
        stored.append(row)
        if len(stored) == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises, here between two stored runs

    with pytest.raises(KeyboardInterrupt):
        gp.sweep(SPEC, store=store, on_run=ctrl_c_after_two)
    with Store(store) as db:
        assert len(db.runs(sweep="resumable")) == 2
    assert len(gp.sweep(SPEC, store=store, resume=True)) == 8
    with Store(store) as db:
        assert len(db.runs(sweep="resumable")) == 8
