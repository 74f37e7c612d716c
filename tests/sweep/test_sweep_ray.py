"""The Ray backend on a local Ray with 2 CPUs: tasks out, results back, the driver writes."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from sweep_helpers import small

import gradprobe as gp
from gradprobe.store import Store
from gradprobe.sweeps.backends import ray_temp_dir

SPEC = {"name": "on-ray", "base": small(**{"train.steps": 6}),
        "grid": {"net.activation": ["tanh", "relu"], "net.norm": ["none", "layer"]}}


def test_ray_sweep_matches_local(store_path) -> None:
    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="gpray", dir="/tmp")  # short: Unix socket paths <= 107
    try:
        # No Ray is running, so the backend starts one (2 CPUs, no dashboard, temp files
        # in `temp`), sends 3 tasks (one vectorised group, two layer-norm runs alone)
        # and shuts it down.
        table = gp.sweep(SPEC, store=store_path, backend="ray", ray_temp_dir=temp,
                         ray_num_cpus=2)
        assert not ray.is_initialized()
    finally:
        ray.shutdown()
        sessions = [p.name for p in Path(temp).iterdir()]
        shutil.rmtree(temp, ignore_errors=True)
    assert any(name.startswith("session_") for name in sessions)
    assert table.attrs["plan"] == "4 configurations: 2 vectorised in 1 group, 2 one by one " \
                                  "(layer norm)"
    assert (table["status"] == "complete").all()
    with Store(store_path) as db:
        runs = db.runs(sweep="on-ray")
        assert len(runs) == 4 and runs["config_key"].nunique() == 4
        assert all(len(db.metrics(r)) > 0 for r in runs["id"])
    local = gp.sweep({**SPEC, "name": "local"}, store=":memory:")
    for col in ("final_loss", "final_train_accuracy", "final_test_accuracy"):
        np.testing.assert_allclose(table[col], local[col], rtol=2e-4)


def test_ray_temp_dir_stays_short(tmp_path) -> None:
    short = Path("/tmp") / "gp-short"
    assert ray_temp_dir(short) == short and short.is_dir()
    short.rmdir()
    long = tmp_path / ("x" * 80)
    with pytest.warns(UserWarning, match="too long a path for Ray"):
        fallback = ray_temp_dir(long)
    assert fallback.name.startswith("gpray") and len(str(fallback)) < 40
    fallback.rmdir()


def test_ray_missing_is_a_user_error(monkeypatch, store_path) -> None:
    import sys

    from gradprobe.errors import UserError

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install 'gradprobe\[ray\]'"):
        gp.sweep(SPEC, store=store_path, backend="ray")
