"""``gp.run``: one experiment from spec to stored result.

Example:
    >>> import gradprobe as gp
    >>> spec = {"net": {"depth": 4}, "data": {"name": "iris"}, "train": {"steps": 20}}
    >>> result = gp.run(spec, store=":memory:")
    >>> result.status, 0.0 <= result.final_test_accuracy <= 1.0
    ('complete', True)
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.markup import escape

from gradprobe import budget
from gradprobe.data import load_data
from gradprobe.nets.plain import build
from gradprobe.spec import ExperimentSpec, load_spec
from gradprobe.store import Store, open_store
from gradprobe.threads import check_threads, parameter_count, thread_policy
from gradprobe.train import train


@dataclass
class RunResult:
    """The outcome of one experiment: the store's id plus the headline numbers."""

    run_id: str
    status: str  # complete | diverged | failed
    final_loss: float
    final_train_accuracy: float
    final_test_accuracy: float
    spec: ExperimentSpec
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    def frame(self) -> pd.DataFrame:
        """The run's tidy metrics: step, layer, depth, quantity, value."""
        return self.metrics.copy()


def run(
    spec_or_path: str | Path | dict[str, Any] | ExperimentSpec,
    store: str | Path | Store | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    progress: bool = False,
    probe: bool = True,
    threads: int | None = None,
) -> RunResult:
    """Train one experiment and store it.

    ``store`` is a path, a :class:`Store`, ``":memory:"`` for nothing on disk, or None for
    the default (``$GRADPROBE_STORE`` or ``runs/gradprobe.sqlite``). Bad specs raise
    :class:`gradprobe.errors.UserError`. A run that raises is stored as ``failed`` and the
    error re-raised; Ctrl-C leaves it ``interrupted``; neither is ever marked complete.
    ``threads``: torch threads while training; None chooses them from the model size
    (:mod:`gradprobe.threads`: small models train with 1). The caller's count is restored.
    """
    check_threads(threads)
    spec = load_spec(spec_or_path, overrides)
    budget.check_experiment(spec)
    owned = not isinstance(store, Store)
    db = open_store(store)
    try:
        data = load_data(spec.data)
        budget.check_experiment(spec, data.in_shape, data.n_classes, len(data.x_train))
        model = build(spec.net, data.in_shape, data.n_classes, seed=spec.train.seed)
        run_id = db.begin_run(spec.name, spec.to_dict())
        started = time.perf_counter()
        try:
            with thread_policy(threads, parameter_count(model)):
                result = train(model, data, spec.train, probe=probe, progress=progress,
                               description=escape(spec.name))
        except KeyboardInterrupt:
            db.mark(run_id, "interrupted", "KeyboardInterrupt")
            raise
        except Exception as exc:
            db.mark(run_id, "failed", "".join(traceback.format_exception_only(exc)).strip())
            raise
        summary = {**result.summary, "wall_time_s": time.perf_counter() - started}
        db.finish_run(run_id, result.status, result.metrics, summary)
    finally:
        if owned:
            db.close()
    return RunResult(
        run_id=run_id,
        status=result.status,
        final_loss=summary["final_loss"],
        final_train_accuracy=summary["final_train_accuracy"],
        final_test_accuracy=summary["final_test_accuracy"],
        spec=spec,
        summary=summary,
        metrics=result.metrics,
    )
