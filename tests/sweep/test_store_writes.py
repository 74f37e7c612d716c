"""The vectorised metric writes store exactly what the cell-by-cell path stored."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import gradprobe as gp
from gradprobe import store as store_module

SPEC = {
    "name": "rows",
    "base": {"net": {"depth": 3, "width": 8}, "data": {"name": "iris"},
             "train": {"steps": 6, "record_every": 2}},
    "grid": {"net.activation": ["tanh", "relu"], "train.seed": [0, 1]},
}


def reference_rows(metrics):
    """The store's row builder before issue 16: every cell through int/str/float."""
    def cell(value):
        value = float(value)
        return None if math.isnan(value) else value

    source = (metrics[["step", "layer", "depth", "quantity", "value"]]
              .itertuples(index=False, name=None))
    return [(int(s), str(lay), int(d), str(q), cell(v)) for s, lay, d, q, v in source]


def reference_insert(db, run_id, rows):
    db.executemany("INSERT INTO metrics (run_id, step, layer, depth, quantity, value) "
                   "VALUES (?, ?, ?, ?, ?, ?)", ((run_id, *row) for row in rows))


def stored(db: gp.Store) -> dict[str, list[tuple]]:
    """Per config key, every metric row with SQLite's type of each cell, in rowid order."""
    out = {}
    for run_id, key in db._db.execute("SELECT id, config_key FROM runs"):
        out[key] = db._db.execute(
            "SELECT step, layer, depth, quantity, value, typeof(step), typeof(depth), "
            "typeof(value) FROM metrics WHERE run_id = ? ORDER BY rowid", (run_id,)).fetchall()
    return out


def test_sweep_rows_identical_to_cell_by_cell_path(tmp_path, monkeypatch):
    new = gp.Store(tmp_path / "new.sqlite")
    gp.sweep(SPEC, store=new)
    with monkeypatch.context() as m:
        m.setattr(store_module, "_metric_columns", reference_rows)
        m.setattr(store_module, "_insert_metrics", reference_insert)
        old = gp.Store(tmp_path / "old.sqlite")
        gp.sweep(SPEC, store=old)
    new_rows, old_rows = stored(new), stored(old)
    assert len(new_rows) == 4
    assert new_rows.keys() == old_rows.keys()
    for key in new_rows:
        assert len(new_rows[key]) > 50
        assert new_rows[key] == old_rows[key]


@pytest.mark.parametrize("string_dtype", ["object", "string"])
def test_nan_null_inf_kept_and_types(tmp_path, string_dtype):
    rng = np.random.default_rng(3)
    values = rng.normal(size=40)
    values[[3, 17]] = np.nan
    values[5], values[9] = np.inf, -np.inf
    frame = pd.DataFrame({
        "step": np.arange(40) // 4, "layer": [f"layers.{i % 4}" for i in range(40)],
        "depth": np.arange(40) % 4, "quantity": ["grad_norm", "act_std"] * 20,
        "value": values,
    }).astype({"layer": string_dtype, "quantity": string_dtype})
    db = gp.Store(tmp_path / "s.sqlite")
    run_id = db.begin_run("r", {})
    db.finish_run(run_id, "complete", metrics=frame)
    rows = db._db.execute("SELECT step, layer, depth, quantity, value, typeof(step), "
                          "typeof(value) FROM metrics WHERE run_id = ? ORDER BY rowid",
                          (run_id,)).fetchall()
    assert [r[:5] for r in rows] == reference_rows(frame)
    assert {r[5] for r in rows} == {"integer"}
    assert [r[6] for r in rows].count("null") == 2
    assert rows[5][4] == math.inf and rows[9][4] == -math.inf
    back = db.metrics(run_id)
    np.testing.assert_array_equal(back["value"].to_numpy(), values)


def test_tuples_and_empty_metrics(tmp_path):
    db = gp.Store(tmp_path / "s.sqlite")
    run_id = db.begin_run("r", {})
    db.finish_run(run_id, "complete",
                  metrics=[(0, "", 0, "loss", 2.5), (1, "", 0, "loss", math.nan)])
    assert db.metrics(run_id)["value"].isna().tolist() == [False, True]
    empty = db.begin_run("e", {})
    db.finish_run(empty, "complete", metrics=[])
    assert len(db.metrics(empty)) == 0
