"""Small stored runs for the report tests, made once per test session (per xdist worker).

Declarative: each entry of :data:`RUNS` is a spec (dotted overrides of a small digits
experiment) and the label the report must give it.
"""

from __future__ import annotations

import pytest

from gradprobe.spec import apply_overrides

BASE = {
    "net": {"kind": "mlp", "depth": 6, "width": 24, "activation": "sigmoid",
            "init": "xavier_normal"},
    "data": {"name": "digits", "max_samples": 400},
    "train": {"steps": 24, "batch_size": 64, "record_every": 8, "eval_every": 8,
              "loss_threshold": 2.0},
}

#: (name, overrides, expected label)
RUNS = [
    ("sigmoid", {}, "6-layer sigmoid, Xavier"),
    ("relu", {"net.activation": "relu", "net.init": "he_normal"}, "6-layer ReLU, He"),
    ("tanh-small", {"net.activation": "tanh", "net.init": {"name": "normal", "sigma_w2": 0.25}},
     "6-layer tanh, σw²=0.25"),
    ("sigmoid-bn", {"net.norm": "batch"}, "6-layer sigmoid, Xavier, batch norm"),
    ("sigmoid-3", {"net.depth": 3}, "3-layer sigmoid, Xavier"),
]


def spec(name: str, overrides: dict) -> dict:
    """One of the test experiments."""
    return apply_overrides({**BASE, "name": name}, overrides)


@pytest.fixture(scope="session")
def report_store(tmp_path_factory):
    """A store holding :data:`RUNS`; returns (path, {name: run_id})."""
    import gradprobe as gp
    from gradprobe.store import Store

    path = tmp_path_factory.mktemp("report") / "runs.sqlite"
    ids = {}
    with Store(path) as db:
        for name, overrides, _ in RUNS:
            ids[name] = gp.run(spec(name, overrides), store=db).run_id
    return path, ids


@pytest.fixture(scope="session")
def records(report_store):
    """The stored runs as report records, in :data:`RUNS` order."""
    from gradprobe.report.data import load_records

    path, ids = report_store
    return load_records(path, runs=[ids[name] for name, _, _ in RUNS])
