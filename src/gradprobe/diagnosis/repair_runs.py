"""Repair's verification runs: same-shape candidates as one ensemble, the rest one by one.

:func:`train_candidates` takes the built candidates (their changed models and training
settings), groups those that can share one ensemble (the same
:func:`~gradprobe.diagnosis.repair_ensemble.signature`, and no training callbacks other
than gradient-norm clipping; at most :data:`MAX_MEMBERS` per ensemble) and trains each
group with
:func:`~gradprobe.diagnosis.repair_ensemble.train_ensemble`; every other candidate, and the
members of a group whose ensemble failed, train alone with
:func:`~gradprobe.diagnosis.training.train_run`. Every candidate's run is what training it
alone gives (within float rounding), so the verdicts do not depend on the grouping.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from gradprobe.diagnosis.inputs import resolve_problem
    >>> problem = resolve_problem((torch.randn(32, 3), torch.randint(0, 2, (32,))))
    >>> net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    >>> jobs = [Job("a", net, 0.1), Job("b", net, 1.0)]
    >>> runs = train_candidates(jobs, problem, steps=5, optimizer="sgd", batch_size=16,
    ...                         seed=0)
    >>> sorted(runs), runs["b"].lr
    (['a', 'b'], 1.0)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from torch import nn

from gradprobe.diagnosis.evidence import TrainingRun
from gradprobe.diagnosis.findings import DEFAULT_THRESHOLDS, Thresholds
from gradprobe.diagnosis.inputs import Problem
from gradprobe.diagnosis.recurrent_fixes import ClipGradNorm
from gradprobe.diagnosis.repair_ensemble import Member, signature, train_ensemble
from gradprobe.diagnosis.training import train_run
from gradprobe.progress import ProgressBar
from gradprobe.train import Callback, StepProgress


@dataclass
class Job:
    """One candidate's verification run: its changed model (copied before training), the
    learning rate and its training callbacks."""

    name: str
    model: nn.Module
    lr: float
    callbacks: Sequence[Callback] = ()


#: The most members one ensemble trains. On the 2-core CPU, VGG-16-style CNN, 1 thread:
#: 4 members 1.21x faster than one by one (median of 5 rounds), 6 members 0.93x
#: (docs/performance.md, "Repair speed"); larger groups train as several ensembles.
MAX_MEMBERS = 4


def _parts(group: list[Job]) -> list[list[Job]]:
    """``group`` in near-equal parts of at most :data:`MAX_MEMBERS` (7 -> 4 + 3)."""
    n = -(-len(group) // MAX_MEMBERS)
    size, extra = divmod(len(group), n)
    bounds = [0]
    for i in range(n):
        bounds.append(bounds[-1] + size + (1 if i < extra else 0))
    return [group[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def ensemble_key(job: Job) -> Hashable | None:
    """Jobs with the same key train as one ensemble; None: the job trains alone."""
    if not all(type(cb) is ClipGradNorm for cb in job.callbacks):
        return None
    return signature(job.model)


def _clip(job: Job) -> float | None:
    clips = [cb.max_norm for cb in job.callbacks if isinstance(cb, ClipGradNorm)]
    return min(clips) if clips else None


def train_candidates(
    jobs: Sequence[Job],
    problem: Problem,
    *,
    steps: int,
    optimizer: str,
    batch_size: int,
    seed: int,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ensemble: bool = True,
    bar: ProgressBar | None = None,
    describe: Callable[[str], str] = str,
) -> dict[str, TrainingRun | Exception]:
    """Each job's run by name, or the exception its training raised (in job order).

    ``ensemble=False`` trains every job alone (the sequential path). ``bar`` advances by one
    per member per step; ``describe(text)`` makes its description.
    """
    out: dict[str, TrainingRun | Exception] = {}
    groups: dict[Hashable, list[Job]] = {}
    alone: list[Job] = []
    for job in jobs:
        key = ensemble_key(job) if ensemble else None
        (alone if key is None else groups.setdefault(key, [])).append(job)
    for group in (part for g in groups.values() for part in _parts(g)):
        if len(group) == 1:
            alone.append(group[0])
            continue
        done = bar.completed if bar is not None else 0
        if bar is not None:
            bar.describe(describe(f"{len(group)} candidates as one ensemble"))
        try:
            runs = train_ensemble(
                [Member(copy.deepcopy(j.model), j.lr, _clip(j)) for j in group], problem,
                steps=steps, optimizer=optimizer, batch_size=batch_size, seed=seed,
                thresholds=thresholds, on_step=None if bar is None else bar.advance)
        except Exception:  # e.g. a forward vmap cannot batch: each member trains alone
            if bar is not None:
                bar.advance(done - bar.completed)
            alone += group
            continue
        out.update({j.name: r for j, r in zip(group, runs, strict=True)})
        if bar is not None:
            bar.advance(done + len(group) * steps - bar.completed)  # diverged members' steps
    order = {job.name: i for i, job in enumerate(jobs)}
    for job in sorted(alone, key=lambda j: order[j.name]):
        done = bar.completed if bar is not None else 0
        if bar is not None:
            bar.describe(describe(job.name))
        progress = [StepProgress(bar)] if bar is not None else []
        try:
            out[job.name] = train_run(
                copy.deepcopy(job.model), problem, steps=steps, lr=job.lr, optimizer=optimizer,
                batch_size=batch_size, seed=seed, thresholds=thresholds,
                callbacks=[*job.callbacks, *progress])
        except Exception as exc:  # reported by the caller (a candidate broke)
            out[job.name] = exc
        if bar is not None:
            bar.advance(done + steps - bar.completed)  # a run that stopped early
    return {job.name: out[job.name] for job in jobs}
