"""``gp.sweep``: a sweep spec in, one stored run per configuration, a table out.

The driver (this process) alone writes the store: each finished configuration is one
:meth:`Store.write_run` transaction, keyed by ``(sweep name, config key)``, written on a
background thread while training goes on (:mod:`gradprobe.sweeps.writer`). So an
interrupted sweep (Ctrl-C, ``kill -9``) keeps every configuration it stored (Ctrl-C: every
one it finished), and ``resume=True`` trains only the ones that are missing. Without
``resume``, a sweep whose name already has runs in the store is refused: resume it or give
it a new name.

Example:
    >>> import gradprobe as gp
    >>> table = gp.sweep({"name": "lr", "base": {"net": {"depth": 3, "width": 8},
    ...                   "data": {"name": "iris"}, "train": {"steps": 5}},
    ...                   "grid": {"train.lr": [0.01, 0.1]}}, store=":memory:")
    >>> table[["train.lr", "status"]].values.tolist()
    [[0.01, 'complete'], [0.1, 'complete']]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from gradprobe.errors import UserError
from gradprobe.store import Store, open_store
from gradprobe.sweeps.backends import make_backend
from gradprobe.sweeps.checks import check_configs, check_unchanged
from gradprobe.sweeps.grid import Config, display_value, expand
from gradprobe.sweeps.plan import Outcome, Task, describe_plan, plan
from gradprobe.sweeps.progress import SweepProgress
from gradprobe.sweeps.spec import SweepSpec, load_sweep_spec
from gradprobe.sweeps.writer import StoreWriter
from gradprobe.threads import check_threads

RESULT_COLUMNS = ["run_id", "status", "final_loss", "final_train_accuracy",
                  "final_test_accuracy"]
RunFn = Callable[[dict[str, Any]], None]


def sweep(
    spec_or_path: str | Path | dict[str, Any] | SweepSpec,
    store: str | Path | Store | None = None,
    backend: str = "local",
    resume: bool = False,
    *,
    address: str | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    progress: bool = False,
    on_run: RunFn | None = None,
    ray_temp_dir: str | Path | None = None,
    ray_num_cpus: int | None = None,
    threads: int | None = None,
) -> pd.DataFrame:
    """Train every configuration of a sweep and store each as a run.

    Args:
        spec_or_path: a sweep spec (file, dict or :class:`SweepSpec`).
        store: a path, a :class:`Store`, ``":memory:"``, or None for the default store.
        backend: ``"local"`` (this process) or ``"ray"`` (Ray tasks; ``address`` joins a
            cluster, else a local Ray is started with its temp files beside the store).
        resume: run only the configurations the store does not hold yet.
        overrides: dotted overrides of the sweep spec (``{"base.train.steps": 10}``).
        progress: show a progress bar with an ETA over the whole sweep.
        on_run: called with each stored run's row (swept values, run_id, status, ...),
            right after it is stored, on the thread that stores it.
        threads: torch threads per task on the local backend; None chooses them from the
            task's size (:mod:`gradprobe.threads`). The caller's count is restored.

    Returns:
        One row per configuration, in expansion order: the swept fields (dotted names,
        choices as labels), ``run_id``, ``status``, ``final_loss``, ``final_train_accuracy``,
        ``final_test_accuracy``. ``frame.attrs["plan"]`` says what ran vectorised.
    """
    check_threads(threads)
    spec = load_sweep_spec(spec_or_path, overrides)
    configs = expand(spec)
    owned = not isinstance(store, Store)
    db = open_store(store)
    claimed = False
    try:
        db.claim_sweep(spec.name)
        claimed = True
        done = _completed(db, spec.name, resume)
        if resume:
            check_unchanged(db.runs(sweep=spec.name), configs, spec.name)
        todo = [c for c in configs if c.key not in done]
        check_configs(todo)
        tasks = plan(todo, spec.group_size, spec.engine, spec.probe)
        if ray_temp_dir is None and backend == "ray":
            ray_temp_dir = _run_dir(db) / "ray"
        runner = make_backend(backend, address=address, temp_dir=ray_temp_dir,
                              num_cpus=ray_num_cpus, threads=threads)
        by_key = {c.key: c for c in todo}
        total_steps = sum(t.member_steps for t in tasks)
        with SweepProgress(progress, spec.name, total_steps, len(configs), len(done)) as bar:

            def stored(row: dict[str, Any]) -> None:
                bar.run_done()
                if on_run is not None:
                    on_run(row)

            def write(outcome: Outcome) -> dict[str, Any]:
                return _write(db, spec.name, by_key[outcome.key], outcome)

            with StoreWriter(write, stored) as writer:

                def store_outcomes(task: Task, outcomes: list[Outcome]) -> None:
                    for outcome in outcomes:
                        writer.submit(outcome)

                if tasks:
                    runner.run(tasks, store_outcomes, bar.advance)
        frame = results_frame(db, spec, configs)
        frame.attrs["plan"] = describe_plan(tasks)
        frame.attrs["resumed"] = len(done)
        return frame
    finally:
        if claimed:
            db.release_sweep(spec.name)
        if owned:
            db.close()


def _completed(db: Store, name: str, resume: bool) -> set[str]:
    if resume:
        return db.completed_keys(name)
    existing = db.runs(sweep=name)
    if len(existing):
        raise UserError(
            f"sweep {name!r} already has {len(existing)} run{'s' if len(existing) != 1 else ''}"
            f" in {db.path}: pass --resume (resume=True) to run only the missing "
            "configurations, or give the sweep a new name"
        )
    return set()


def _write(db: Store, sweep_name: str, config: Config, outcome: Outcome) -> dict[str, Any]:
    """One finished configuration -> one transaction; returns its table row."""
    run_id = db.write_run(
        config.name, config.spec.to_dict(), outcome.status, outcome.metrics, outcome.summary,
        sweep=sweep_name, config_key=config.key, duration_s=outcome.duration_s,
    )
    return {**_swept(config), "run_id": run_id, "status": outcome.status,
            **{c: outcome.summary.get(c, math.nan) for c in RESULT_COLUMNS[2:]}}


def _swept(config: Config) -> dict[str, Any]:
    return {k: display_value(v) for k, v in config.values.items()}


def results_frame(db: Store, spec: SweepSpec, configs: list[Config]) -> pd.DataFrame:
    """The sweep's table from the store: one row per configuration of ``configs``."""
    runs = db.runs(sweep=spec.name)
    stored = {r.config_key: r for r in runs.itertuples(index=False)}
    rows = []
    for c in configs:
        run = stored.get(c.key)
        row: dict[str, Any] = _swept(c)
        row["run_id"] = run.id if run is not None else None
        row["status"] = run.status if run is not None else "missing"
        for col in RESULT_COLUMNS[2:]:
            value = getattr(run, col) if run is not None else None
            row[col] = math.nan if value is None else float(value)
        rows.append(row)
    return pd.DataFrame(rows, columns=spec.swept_keys() + RESULT_COLUMNS)


def _run_dir(db: Store) -> Path:
    """The folder the store lives in (the current folder for an in-memory store)."""
    if str(db.path) == ":memory:":
        return Path.cwd() / "runs"
    return Path(db.path).absolute().parent
