"""A playground training: the library's loop with a streaming callback, stored like ``gp.run``.

:class:`StreamCallback` hands the record to the page as the loop produces it: network rows
from ``loop.rows`` and probe rows from the :class:`~gradprobe.train.ProbeCallback`'s probe
(read incrementally with ``Probe.rows(start)``), in batches at most every ``flush_s``. It also
turns a cancelled job into ``loop.stop(..., "interrupted")``. The run is registered in the
store when it starts and finished with its whole record, so ``gradprobe runs`` lists it.

Example:
    >>> from gradprobe.serve.config import to_spec
    >>> from gradprobe.serve.jobs import Slots
    >>> spec = to_spec({"depth": 3, "width": 8, "steps": 5, "dataset": "iris"})
    >>> job = Slots(1).start("me", "train", lambda job: run_training(job, spec, ":memory:"))
    >>> job.wait(60), job.events_since(0)[-2]["status"]
    (True, 'complete')
"""

from __future__ import annotations

import math
import time
import traceback
from pathlib import Path
from typing import Any

from gradprobe.serve.jobs import Job
from gradprobe.spec import ExperimentSpec
from gradprobe.train import Callback, Loop, ProbeCallback

#: The record's quantities the page draws (the store gets every quantity).
STREAMED = frozenset({
    "loss", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
    "backward_signal_norm", "saturated_fraction", "dead_unit_fraction",
})


def _row(row: tuple) -> list[Any]:
    step, layer, depth, quantity, value = row
    return [int(step), layer, int(depth), quantity, value if math.isfinite(value) else None]


class StopWhenCancelled(Callback):
    """Ends the training loop (``interrupted``) after the step in which ``job`` was
    cancelled."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def after_update(self, loop: Loop, step: int, loss: float) -> None:
        if self.job.cancelled:
            loop.stop(f"stopped from the playground: {self.job.cancel_reason}", "interrupted")


class StreamCallback(StopWhenCancelled):
    """Streams record rows to ``job`` and stops the loop when the job is cancelled."""

    def __init__(self, job: Job, probe: ProbeCallback | None, flush_s: float = 0.1) -> None:
        super().__init__(job)
        self.probe_cb = probe
        self.flush_s = flush_s
        self._loop_index = 0
        self._probe_index = 0
        self._recorded = 0
        self._last = 0.0

    def _flush(self, loop: Loop, force: bool = False) -> None:
        probe = self.probe_cb.probe if self.probe_cb is not None else None
        fresh_probe = probe is not None and len(probe.recorded_steps) > self._recorded
        if not (force or fresh_probe or time.monotonic() - self._last >= self.flush_s):
            return
        rows = loop.rows[self._loop_index:]
        self._loop_index += len(rows)
        if probe is not None:
            self._recorded = len(probe.recorded_steps)
            new = probe.rows(self._probe_index)
            self._probe_index += len(new)
            rows = rows + new
        picked = [_row(r) for r in rows if r[3] in STREAMED]
        if picked:
            self.job.emit({"type": "rows", "rows": picked})
        self._last = time.monotonic()

    def after_update(self, loop: Loop, step: int, loss: float) -> None:
        super().after_update(loop, step, loss)
        self._flush(loop)

    def on_eval(self, loop: Loop, step: int, values: dict[str, float]) -> None:
        self._flush(loop)

    def on_end(self, loop: Loop) -> None:
        self._flush(loop, force=True)


def run_training(job: Job, spec: ExperimentSpec, store: str | Path | None) -> None:
    """Train ``spec`` for ``job``, streaming the record, and store the run."""
    from gradprobe.data import load_data
    from gradprobe.nets.plain import build
    from gradprobe.store import Store
    from gradprobe.train import train

    data = load_data(spec.data)
    model = build(spec.net, data.in_shape, data.n_classes, seed=spec.train.seed)
    with Store(store) as db:
        run_id = db.begin_run(spec.name, spec.to_dict())
        job.emit({"type": "start", "run_id": run_id, "depth": spec.net.depth,
                  "steps": spec.train.steps, "label": spec.net.describe()})
        probe = ProbeCallback(spec.train.record_every)
        started = time.perf_counter()
        try:
            result = train(model, data, spec.train, probe=False,
                           callbacks=[probe, StreamCallback(job, probe)])
        except Exception as exc:
            db.mark(run_id, "failed", "".join(traceback.format_exception_only(exc)).strip())
            raise
        summary = {**result.summary, "wall_time_s": time.perf_counter() - started}
        db.finish_run(run_id, result.status, result.metrics, summary)
    job.emit({"type": "result", "run_id": run_id, "status": result.status,
              "summary": {k: summary.get(k) for k in (
                  "final_loss", "final_train_accuracy", "final_test_accuracy", "steps_run",
                  "stop_reason", "diverged_at_step", "wall_time_s")}})
