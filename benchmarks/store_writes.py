"""Store writes as a share of sweep time (issue 16: at most 5 %).

The case: 4 activations x 4 inits x 4 seeds (64 configurations), MLP depth 10 width 64 on
digits, 50 SGD steps, through the public ``gp.sweep`` into a SQLite store file. The time
spent inside :meth:`Store.write_run` is measured around the call, so it covers turning the
metrics into rows, the inserts and the commit.

Two store paths, interleaved round by round in one run:

* ``legacy``: the store's metric path before issue 16, kept here callable: the DataFrame
  iterated row by row, every cell through a Python ``int()``/``str()``/``float()`` call,
  then a generator of ``(run_id, *row)`` tuples into ``executemany``;
* ``vectorised``: the store's own path (:func:`gradprobe.store._metric_columns`: columns
  converted by numpy ``tolist``, zipped into ``executemany``).

Both write each configuration in one transaction, through the same ``Store.write_run``.

Prints the share of sweep time spent storing for each path, and the ratio.

    OMP_NUM_THREADS=1 python benchmarks/store_writes.py --rounds 3
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

import gradprobe as gp
from gradprobe import store as store_module

COLUMNS = ["step", "layer", "depth", "quantity", "value"]


def legacy_metric_rows(metrics: Any) -> list[tuple]:
    """The row builder before issue 16 (one Python conversion per cell)."""
    def cell(value: Any) -> float | None:
        value = float(value)
        return None if math.isnan(value) else value

    if isinstance(metrics, pd.DataFrame):
        source = metrics[COLUMNS].itertuples(index=False, name=None)
    else:
        source = metrics
    return [(int(s), str(lay), int(d), str(q), cell(v)) for s, lay, d, q, v in source]


def legacy_insert(db: Any, run_id: str, rows: list[tuple]) -> None:
    """The insert before issue 16: a generator of ``(run_id, *row)`` tuples."""
    db.executemany(
        "INSERT INTO metrics (run_id, step, layer, depth, quantity, value) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        ((run_id, *row) for row in rows),
    )


LEGACY = (legacy_metric_rows, legacy_insert)
VECTORISED = (store_module._metric_columns, store_module._insert_metrics)


def sweep_spec(name: str, steps: int) -> dict:
    """The issue's case."""
    return {
        "name": name,
        "base": {"net": {"kind": "mlp", "depth": 10, "width": 64},
                 "data": {"name": "digits"},
                 "train": {"optimizer": "sgd", "lr": 0.05, "steps": steps,
                           "batch_size": 128}},
        "grid": {"net.activation": ["sigmoid", "tanh", "relu", "leaky_relu"],
                 "net.init": ["xavier_normal", "he_normal", "orthogonal",
                              {"name": "normal", "sigma_w2": 1.5}],
                 "train.seed": [0, 1, 2, 3]},
    }


def timed_sweep(path: Path, name: str, steps: int, path_fns: tuple) -> tuple[float, float]:
    """(sweep seconds, seconds inside write_run) for one sweep through ``path_fns``."""
    spent = [0.0]
    original_write = gp.Store.write_run

    def write_run(self: gp.Store, *args: Any, **kwargs: Any) -> str:
        start = time.perf_counter()
        try:
            return original_write(self, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    gp.Store.write_run = write_run  # type: ignore[method-assign]
    store_module._metric_columns, store_module._insert_metrics = path_fns
    try:
        start = time.perf_counter()
        gp.sweep(sweep_spec(name, steps), store=path)
        total = time.perf_counter() - start
    finally:
        gp.Store.write_run = original_write  # type: ignore[method-assign]
        store_module._metric_columns, store_module._insert_metrics = VECTORISED
    return total, spent[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    import torch

    paths = {"legacy": LEGACY, "vectorised": VECTORISED}
    shares: dict[str, list[float]] = {k: [] for k in paths}
    with tempfile.TemporaryDirectory() as tmp:
        gp.sweep(sweep_spec("warmup", 2), store=Path(tmp) / "warm.sqlite")
        for r in range(args.rounds):
            order = list(paths.items())
            for label, fn in order if r % 2 == 0 else order[::-1]:
                total, spent = timed_sweep(Path(tmp) / f"{label}{r}.sqlite", "case",
                                           args.steps, fn)
                shares[label].append(spent / total)
                print(f"round {r} {label:10s} sweep {total:6.2f} s  store {spent:5.3f} s "
                      f"({100 * spent / total:4.1f} %)", flush=True)
    print(f"machine: {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    legacy, new = (statistics.median(shares[k]) for k in paths)
    print(f"store share (median): legacy {100 * legacy:.1f} %  vectorised {100 * new:.1f} %")
    print(f"ratio legacy/vectorised store share {legacy / new:.2f}x  "
          f"target <= 5 %: {'met' if new <= 0.05 else 'NOT met'}")


if __name__ == "__main__":
    main()
