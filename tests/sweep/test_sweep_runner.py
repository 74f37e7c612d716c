"""gp.sweep end to end: the table, the store, the resume policy, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
from sweep_helpers import small

import gradprobe as gp
from gradprobe.errors import UserError
from gradprobe.store import Store
from gradprobe.sweeps.grid import expand
from gradprobe.sweeps.spec import load_sweep_spec

RESULT_COLUMNS = ["run_id", "status", "final_loss", "final_train_accuracy",
                  "final_test_accuracy"]


def sweep_spec(name: str = "s", **extra) -> dict:
    return {"name": name, "base": small(), "grid": {
        "net.activation": ["tanh", "relu"],
        "net.init": ["xavier_normal", {"name": "normal", "sigma_w2": 1.5}],
        "train.seed": [0, 1],
    }, **extra}


def test_table_has_swept_columns_and_results(store_path) -> None:
    stored = []
    table = gp.sweep(sweep_spec(), store=store_path, on_run=stored.append)
    assert list(table.columns) == ["net.activation", "net.init", "train.seed", *RESULT_COLUMNS]
    assert len(table) == 8 and (table["status"] == "complete").all()
    assert table["net.init"].tolist()[:2] == ["xavier_normal", "xavier_normal"]
    assert table["net.init"].iloc[2] == "normal(sigma_w2=1.5)"
    assert table.attrs["plan"] == "8 configurations: 8 vectorised in 1 group"
    assert sorted(r["run_id"] for r in stored) == sorted(table["run_id"])
    with Store(store_path) as db:
        runs = db.runs(sweep="s")
        assert len(runs) == 8 and set(runs["id"]) == set(table["run_id"])
        row = db.run(table["run_id"].iloc[0])
        assert row["name"] == "s[activation=tanh,init=xavier_normal,seed=0]"
        assert row["summary"]["engine"] == "vectorised"
        metrics = db.metrics(row["id"])
        assert (metrics["quantity"] == "loss").sum() == 12
        assert "backward_signal_norm" in set(metrics["quantity"])


def test_a_swept_configuration_equals_gp_run(store_path) -> None:
    table = gp.sweep(sweep_spec(), store=store_path)
    config = expand(load_sweep_spec(sweep_spec()))[5]
    single = gp.run(config.spec, store=":memory:")
    row = table.iloc[5]
    for col in ("final_loss", "final_train_accuracy", "final_test_accuracy"):
        np.testing.assert_allclose(row[col], getattr(single, col), rtol=2e-4)
    with Store(store_path) as db:
        stored = db.metrics(row["run_id"])
    assert len(stored) == len(single.metrics)
    np.testing.assert_allclose(stored["value"], single.metrics["value"], rtol=2e-4, atol=1e-5)


def test_same_name_again_needs_resume(store_path) -> None:
    first = gp.sweep(sweep_spec(), store=store_path)
    with pytest.raises(UserError, match="already has 8 runs .* pass --resume"):
        gp.sweep(sweep_spec(), store=store_path)
    again = gp.sweep(sweep_spec(), store=store_path, resume=True)
    assert again.attrs["resumed"] == 8 and again.attrs["plan"].startswith("0 configurations")
    assert again["run_id"].tolist() == first["run_id"].tolist()
    bigger = sweep_spec()
    bigger["grid"]["train.seed"] = [0, 1, 2]
    grown = gp.sweep(bigger, store=store_path, resume=True)
    assert len(grown) == 12 and grown.attrs["resumed"] == 8
    with Store(store_path) as db:
        assert len(db.runs(sweep="s")) == 12


def test_unsupported_configurations_fall_back_to_train(store_path) -> None:
    spec = {"name": "mixed", "base": small(**{"train.steps": 5}),
            "grid": {"net.norm": ["none", "batch"], "train.seed": [0, 1]}}
    table = gp.sweep(spec, store=store_path)
    assert table.attrs["plan"] == ("4 configurations: 2 vectorised in 1 group, "
                                   "2 one by one (batch norm)")
    assert (table["status"] == "complete").all()
    with Store(store_path) as db:
        engines = {db.run(r)["summary"]["engine"] for r in table["run_id"]}
    assert engines == {"vectorised", "loop"}


def test_engine_loop_and_group_size(store_path) -> None:
    loop = gp.sweep(sweep_spec("loop", engine="loop"), store=store_path)
    assert loop.attrs["plan"].startswith("8 configurations: 0 vectorised")
    split = gp.sweep(sweep_spec("split", group_size=3), store=store_path)
    assert split.attrs["plan"] == "8 configurations: 8 vectorised in 3 groups"
    np.testing.assert_allclose(split["final_loss"], loop["final_loss"], rtol=2e-4)


def test_different_shapes_make_different_groups(store_path) -> None:
    spec = {"name": "shapes", "base": small(**{"train.steps": 3}),
            "grid": {"net.depth": [2, 3], "train.seed": [0, 1]}}
    assert gp.sweep(spec, store=":memory:").attrs["plan"] == (
        "4 configurations: 4 vectorised in 2 groups")


def test_gp_sweep_stays_the_function_after_submodule_imports() -> None:
    import gradprobe.sweeps.runner  # noqa: F401  (the package must not shadow gp.sweep)

    assert gp.sweep is gradprobe.sweeps.runner.sweep
    table = gp.sweep({"name": "c", "base": small(**{"train.steps": 2})}, store=":memory:")
    assert len(table) == 1 and table["status"].iloc[0] == "complete"


def test_unknown_backend(store_path) -> None:
    with pytest.raises(UserError, match="unknown backend 'slurm' .allowed: local, ray"):
        gp.sweep(sweep_spec(), store=store_path, backend="slurm")
