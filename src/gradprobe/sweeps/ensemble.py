"""Vectorised training: many same-shape configurations trained as one batched network.

:func:`train_ensemble` is :func:`gradprobe.train.train` for a group of configurations at
once. Member ``m`` gets what training its configuration alone gives, within float
rounding: the same initial weights (``build``'s initialisation with the member's seed), the
same minibatches (a :class:`~gradprobe.train.BatchSampler` per seed, so members with
different seeds see different batches), the same loss, optimizer, evaluation schedule,
summary and convergence figures, and the same probe quantities, computed from the batched
tensors with the probe's own definitions (:mod:`gradprobe.probe.quantities`). A member
whose loss turns NaN/Inf is frozen and reported ``diverged`` at that step; the others go
on.

Members may differ in activation, weight and bias init, learning rate, momentum and seed
(and the convergence-figure settings). Everything that decides layer shapes or the code
path must agree: see :func:`group_key`. What the engine does not train (CNNs,
normalisation, residual connections, Adam) is named by :func:`unsupported_reason`; the
sweep runner trains those configurations one by one with ``train()``.

Example:
    >>> from gradprobe.spec import load_spec
    >>> from gradprobe.data import load_data
    >>> specs = [load_spec({"net": {"depth": 3, "width": 8, "activation": a},
    ...                     "data": {"name": "iris"}, "train": {"steps": 4}})
    ...          for a in ("tanh", "relu")]
    >>> results = train_ensemble(specs, load_data(specs[0].data))
    >>> [r.status for r in results]
    ['complete', 'complete']
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import numpy as np
import torch

from gradprobe import native
from gradprobe.data import Dataset
from gradprobe.spec import ExperimentSpec
from gradprobe.sweeps.engine import EVAL_QUANTITIES, Engine, Stopped
from gradprobe.train import TrainResult, resolve_device

_Engine = Engine  # the engine one part trains with (tests patch it here)

__all__ = ["EVAL_QUANTITIES", "Stopped", "group_key", "train_ensemble", "unsupported_reason"]

SUPPORTED_OPTIMIZERS = ("sgd", "momentum")
CPU_MEMORY_BUDGET = 2 << 30  # bytes a batched group may use on a CPU (see memory_budget)
MIN_MEMBERS_PER_WORKER = 32  # smaller engines lose more to the GIL than they gain (cpu_workers)


def unsupported_reason(spec: ExperimentSpec) -> str | None:
    """Why the engine cannot train ``spec`` (None when it can).

    Example:
        >>> from gradprobe.spec import load_spec
        >>> unsupported_reason(load_spec({"net": {"norm": "batch"}}))
        'batch norm'
    """
    net, train = spec.net, spec.train
    if net.kind != "mlp":
        return f"{net.kind} networks"
    if net.norm != "none":
        return f"{net.norm} norm"
    if net.residual:
        return "residual connections"
    if train.optimizer not in SUPPORTED_OPTIMIZERS:
        return f"the {train.optimizer} optimizer"
    if train.autopilot:
        return "autopilot (a training-loop callback)"
    return None


def group_key(spec: ExperimentSpec) -> str:
    """What members of one batch must share: layer shapes, data and the training schedule.

    Example:
        >>> from gradprobe.spec import load_spec
        >>> a = load_spec({"net": {"activation": "relu"}, "train": {"seed": 1, "lr": 0.1}})
        >>> group_key(a) == group_key(load_spec({}))
        True
    """
    t = spec.train
    shared = {
        "net": {"kind": spec.net.kind, "widths": spec.net.hidden_widths(),
                "norm": spec.net.norm, "residual": spec.net.residual},
        "data": spec.data.model_dump(mode="json"),
        "train": {"steps": t.steps, "batch_size": t.batch_size, "loss": t.loss,
                  "device": t.device, "optimizer": t.optimizer,
                  "record_every": t.record_every, "eval_every": t.eval_every},
    }
    return json.dumps(shared, sort_keys=True)


StepFn = Callable[[int, int], None]  # (step, members that took it)
ResultFn = Callable[[int, TrainResult], None]  # (index in specs, that member's result)


def train_ensemble(
    specs: list[ExperimentSpec],
    data: Dataset,
    probe: bool = True,
    on_step: StepFn | None = None,
    on_result: ResultFn | None = None,
) -> list[TrainResult]:
    """Train every spec in ``specs`` on ``data`` as one batched network.

    All specs must share :func:`group_key` and be supported (:func:`unsupported_reason`).
    Returns one :class:`TrainResult` per spec, in the order given, as ``train(build(spec),
    data, spec.train, probe=probe)`` would. ``on_step(step, n)`` is called after each
    batched step, ``n`` being the number of members it trained. ``on_result(i, result)``
    is called as soon as member ``specs[i]``'s result is built (the sweep stores it while
    the next results are built), from the thread that trained it.

    Members are independent, so the group may be trained in parts with the same results:
    on a CPU with several torch threads, one part per thread side by side
    (:func:`cpu_workers`), and always in parts small enough to fit :func:`memory_budget`.
    """
    if not specs:
        return []
    _check_group(specs)
    order = sorted(range(len(specs)), key=lambda m: specs[m].net.activation.label())
    members = [specs[m] for m in order]  # sorted: one activation per contiguous slice
    device = resolve_device(members[0].train.device)
    workers = cpu_workers(device, len(members))
    parts = split_members(members, data, device, workers)
    emit = None if on_result is None else (lambda i, r: on_result(order[i], r))
    results = [r for part in _train_parts(parts, data, probe, on_step, workers, emit)
               for r in part]
    out: list[TrainResult] = [None] * len(specs)  # type: ignore[list-item]
    for position, m in enumerate(order):
        out[m] = results[position]
    return out


def cpu_workers(device: torch.device, n_members: int) -> int:
    """How many engines train side by side: on a CPU one per torch thread (each engine
    single-threaded), when every one gets at least :data:`MIN_MEMBERS_PER_WORKER` members;
    else 1 (a GPU, or one thread, or a small group: one engine with all torch threads).

    Independent engines need no synchronisation between cores, where one engine's torch
    ops meet at a barrier after every one of its hundreds of small parallel operations;
    on a shared machine, where a core is often taken away for a while, that barrier is
    where the time goes.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads < 2 or n_members < MIN_MEMBERS_PER_WORKER * threads:
        return 1
    return threads


def split_members(
    members: list[ExperimentSpec], data: Dataset, device: torch.device, workers: int
) -> list[list[ExperimentSpec]]:
    """Contiguous, near-equal parts: at least one per worker, and small enough that the
    parts training at once fit :func:`memory_budget` together."""
    fits = max(1, int(memory_budget(device) // workers // member_bytes(members[0], data)))
    n_parts = max(workers, -(-len(members) // fits))
    n_parts = min(len(members), -(-n_parts // workers) * workers)  # a multiple of workers
    bounds = np.linspace(0, len(members), n_parts + 1).round().astype(int)
    return [members[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _train_parts(
    parts: list[list[ExperimentSpec]],
    data: Dataset,
    probe: bool,
    on_step: StepFn | None,
    workers: int,
    emit: ResultFn | None = None,
) -> list[list[TrainResult]]:
    """Each part trained by its own engine: in turn, or ``workers`` at a time in threads
    (torch ops and the native kernels release the GIL) with torch single-threaded.
    ``emit(i, result)`` for each member, ``i`` counting over all parts."""
    offsets = np.cumsum([0] + [len(p) for p in parts]).tolist()
    if workers == 1:
        return [_train_part(part, data, probe, on_step, None, emit, offset)
                for part, offset in zip(parts, offsets, strict=False)]
    lock = threading.Lock()
    stop = threading.Event()

    def report(step: int, n: int) -> None:
        with lock:
            on_step(step, n)  # type: ignore[misc]

    def work(part: list[ExperimentSpec], offset: int) -> list[TrainResult]:
        torch.set_num_threads(1)  # this thread's OpenMP team: one thread
        return _train_part(part, data, probe, None if on_step is None else report, stop,
                           emit, offset)

    native.load()  # build the kernels (if at all) once, before the engines ask for them
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="gradprobe-engine") as pool:
            futures = [pool.submit(work, part, offset)
                       for part, offset in zip(parts, offsets, strict=False)]
            try:
                wait(futures, return_when=FIRST_EXCEPTION)
            finally:  # Ctrl-C, or a part failed: the others stop at their next step
                if not all(f.done() and f.exception() is None for f in futures):
                    stop.set()
                    for future in futures:
                        future.cancel()  # parts not started yet never start
                    wait(futures)
            failures = [f.exception() for f in futures if not f.cancelled()]
            first = next((e for e in failures if e is not None and not isinstance(e, Stopped)),
                         None)
            if first is not None:
                raise first
            return [future.result() for future in futures]
    finally:
        torch.set_num_threads(threads)


def _train_part(
    part: list[ExperimentSpec],
    data: Dataset,
    probe: bool,
    on_step: StepFn | None,
    stop: threading.Event | None,
    emit: ResultFn | None = None,
    offset: int = 0,
) -> list[TrainResult]:
    engine = _Engine(part, data, probe)
    try:
        engine.run(None if on_step is None else lambda step, n=len(part): on_step(step, n), stop)
    finally:
        engine.release()
    results = []
    for m in range(len(part)):
        results.append(engine.result(m))
        if emit is not None:
            emit(offset + m, results[-1])
    return results


def member_bytes(spec: ExperimentSpec, data: Dataset) -> int:
    """Rough memory of one member while training: parameter-sized and activation tensors.

    Parameters, gradients, momentum buffer, the pre-update copy at recorded steps and a
    temporary: 5 parameter-sized float32 tensors. Activations: per layer its output, the
    activation, the backward signal and phi': 4 batch-by-width tensors.
    """
    sizes = [data.n_features, *spec.net.hidden_widths(), data.n_classes]
    params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    n = len(data.x_train)
    batch = min(spec.train.batch_size or n, n)
    return 4 * (5 * params + 4 * batch * sum(sizes))


def memory_budget(device: torch.device) -> float:
    """Bytes one batched group may use: 2 GiB on a CPU, half the free memory of a GPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2
    return float(CPU_MEMORY_BUDGET)


def _check_group(specs: list[ExperimentSpec]) -> None:
    for spec in specs:
        reason = unsupported_reason(spec)
        if reason is not None:
            raise ValueError(f"the vectorised engine does not support {reason}")
    keys = {group_key(s) for s in specs}
    if len(keys) > 1:
        raise ValueError("specs in one ensemble must share layer shapes, data and schedule "
                         "(gradprobe.sweeps.ensemble.group_key)")
