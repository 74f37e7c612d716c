"""Planning a sweep: configurations -> tasks, and what one task does.

A :class:`Task` is the unit a backend hands out: either a group of configurations the
vectorised engine trains together (same :func:`~gradprobe.sweeps.ensemble.group_key`, at
most ``group_size`` of them), or one configuration the engine does not support, trained
alone with :func:`gradprobe.train.train`. Tasks carry plain spec dicts, so they pickle
cheaply to Ray workers, and :func:`run_task` needs nothing but the task.

Example:
    >>> from gradprobe.sweeps.spec import load_sweep_spec
    >>> from gradprobe.sweeps.grid import expand
    >>> sweep = load_sweep_spec({"name": "s", "grid": {"net.activation": ["tanh", "relu"],
    ...                                                "net.norm": ["none", "batch"]}})
    >>> [(t.vectorised, len(t.keys)) for t in plan(expand(sweep))]
    [(True, 2), (False, 1), (False, 1)]
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from gradprobe.data import Dataset, load_data
from gradprobe.nets.plain import build
from gradprobe.spec import DataSpec, ExperimentSpec
from gradprobe.sweeps.ensemble import group_key, train_ensemble, unsupported_reason
from gradprobe.sweeps.grid import Config
from gradprobe.train import TrainResult, train


@dataclass
class Task:
    """Configurations trained in one go (vectorised), or one trained alone."""

    keys: list[str]  # config keys, one per configuration
    specs: list[dict[str, Any]]  # resolved ExperimentSpec dicts
    vectorised: bool
    probe: bool = True
    note: str | None = None  # why a configuration runs alone

    @property
    def member_steps(self) -> int:
        """Training steps over all members: the unit of sweep progress."""
        return sum(int(s["train"]["steps"]) for s in self.specs)


@dataclass
class Outcome:
    """What training one configuration produced (plain data: it travels back from Ray)."""

    key: str
    status: str
    metrics: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0


def plan(
    configs: list[Config], group_size: int = 64, engine: str = "auto", probe: bool = True
) -> list[Task]:
    """Group ``configs`` into tasks, in order of first appearance.

    A group bigger than ``group_size`` is split into near-equal parts. With
    ``engine="loop"`` every configuration is its own ``train()`` task.
    """
    groups: dict[str, list[Config]] = {}
    slots: list[Task | str] = []  # a task alone, or a group's key, in order of appearance
    for c in configs:
        reason = "engine: loop" if engine == "loop" else unsupported_reason(c.spec)
        if reason is not None:
            task = Task([c.key], [c.spec.to_dict()], vectorised=False, probe=probe, note=reason)
            slots.append(task)
            continue
        key = group_key(c.spec)
        if key not in groups:
            groups[key] = []
            slots.append(key)
        groups[key].append(c)
    tasks: list[Task] = []
    for slot in slots:
        if isinstance(slot, Task):
            tasks.append(slot)
            continue
        members = groups[slot]
        parts = math.ceil(len(members) / group_size)
        size = math.ceil(len(members) / parts)
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            tasks.append(Task([c.key for c in chunk], [c.spec.to_dict() for c in chunk],
                              vectorised=True, probe=probe))
    return tasks


def describe_plan(tasks: list[Task]) -> str:
    """One line: how many configurations run vectorised, how many alone and why.

    Example:
        >>> describe_plan([Task(["a", "b"], [{}, {}], True), Task(["c"], [{}], False,
        ...                note="batch norm")])
        '3 configurations: 2 vectorised in 1 group, 1 one by one (batch norm)'
    """
    vec = [t for t in tasks if t.vectorised]
    alone = [t for t in tasks if not t.vectorised]
    n_vec = sum(len(t.keys) for t in vec)
    total = n_vec + len(alone)
    text = f"{total} configuration{'s' if total != 1 else ''}: {n_vec} vectorised in " \
           f"{len(vec)} group{'s' if len(vec) != 1 else ''}"
    if alone:
        reasons = sorted({t.note or "" for t in alone})
        text += f", {len(alone)} one by one ({', '.join(reasons)})"
    return text


StepsFn = Callable[[int], None]  # advance progress by this many member-steps


OutcomeFn = Callable[[Outcome], None]  # one configuration finished


def run_task(task: Task, on_steps: StepsFn | None = None,
             on_outcome: OutcomeFn | None = None) -> list[Outcome]:
    """Train a task's configurations; outcomes in the task's order.

    ``on_steps(n)`` is called as training advances by ``n`` member-steps, and
    ``on_outcome(outcome)`` as soon as each configuration's outcome is ready (in a
    vectorised task, from the thread of the engine that trained it).
    """
    specs = [ExperimentSpec.model_validate(s) for s in task.specs]
    if task.vectorised:
        data = _dataset(specs[0].data)
        started = time.perf_counter()
        trained: list[float] = []  # the amortised wall time, fixed by the first result
        extra = {"engine": "vectorised", "group_size": len(specs)}
        done: dict[int, Outcome] = {}

        def outcome(i: int, r: TrainResult) -> None:
            if not trained:
                trained.append((time.perf_counter() - started) / len(specs))
            share = trained[0]
            done[i] = Outcome(task.keys[i], r.status, r.metrics,
                              {**r.summary, "wall_time_s": share, **extra}, share)
            if on_outcome is not None:
                on_outcome(done[i])

        step_fn = None if on_steps is None else (lambda step, n: on_steps(n))
        train_ensemble(specs, data, probe=task.probe, on_step=step_fn, on_result=outcome)
        return [done[i] for i in range(len(specs))]
    outcomes = []
    for key, spec in zip(task.keys, specs, strict=True):
        data = _dataset(spec.data)
        model = build(spec.net, data.in_shape, data.n_classes, seed=spec.train.seed)
        started = time.perf_counter()
        step_fn = None if on_steps is None else (lambda step, loss: on_steps(1))
        result = train(model, data, spec.train, probe=task.probe, on_step=step_fn)
        took = time.perf_counter() - started
        summary = {**result.summary, "wall_time_s": took, "engine": "loop",
                   "engine_note": task.note}
        outcomes.append(Outcome(key, result.status, result.metrics, summary, took))
        if on_outcome is not None:
            on_outcome(outcomes[-1])
    return outcomes


_DATA: dict[str, Dataset] = {}


def _dataset(spec: DataSpec) -> Dataset:
    """Load a dataset once per process (loading is deterministic; training never mutates)."""
    key = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    if key not in _DATA:
        if len(_DATA) >= 4:
            _DATA.pop(next(iter(_DATA)))
        _DATA[key] = load_data(spec)
    return _DATA[key]
