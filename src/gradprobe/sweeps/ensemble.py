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
import math
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from gradprobe import native
from gradprobe.data import Dataset
from gradprobe.spec import ExperimentSpec
from gradprobe.sweeps import quantities as Q
from gradprobe.sweeps.stacked import StackedMLP
from gradprobe.train import BatchSampler, TrainResult, convergence_figures, resolve_device

SUPPORTED_OPTIMIZERS = ("sgd", "momentum")
CPU_MEMORY_BUDGET = 2 << 30  # bytes a batched group may use on a CPU (see memory_budget)
MIN_MEMBERS_PER_WORKER = 32  # smaller engines lose more to the GIL than they gain (cpu_workers)
EVAL_QUANTITIES = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
# activations per evaluation chunk: cache-sized on a CPU (4 MiB), large on a GPU
_EVAL_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 26}



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


def train_ensemble(
    specs: list[ExperimentSpec],
    data: Dataset,
    probe: bool = True,
    on_step: StepFn | None = None,
) -> list[TrainResult]:
    """Train every spec in ``specs`` on ``data`` as one batched network.

    All specs must share :func:`group_key` and be supported (:func:`unsupported_reason`).
    Returns one :class:`TrainResult` per spec, in the order given, as ``train(build(spec),
    data, spec.train, probe=probe)`` would. ``on_step(step, n)`` is called after each
    batched step, ``n`` being the number of members it trained.

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
    results = [r for part in _train_parts(parts, data, probe, on_step, workers) for r in part]
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
) -> list[list[TrainResult]]:
    """Each part trained by its own engine: in turn, or ``workers`` at a time in threads
    (torch ops and the native kernels release the GIL) with torch single-threaded."""
    if workers == 1:
        return [_train_part(part, data, probe, on_step, None) for part in parts]
    lock = threading.Lock()
    stop = threading.Event()

    def report(step: int, n: int) -> None:
        with lock:
            on_step(step, n)  # type: ignore[misc]

    def work(part: list[ExperimentSpec]) -> list[TrainResult]:
        torch.set_num_threads(1)  # this thread's OpenMP team: one thread
        return _train_part(part, data, probe, None if on_step is None else report, stop)

    native.load()  # build the kernels (if at all) once, before the engines ask for them
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="gradprobe-engine") as pool:
            futures = [pool.submit(work, part) for part in parts]
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
) -> list[TrainResult]:
    engine = _Engine(part, data, probe)
    try:
        engine.run(None if on_step is None else lambda step, n=len(part): on_step(step, n), stop)
    finally:
        engine.release()
    return [engine.result(m) for m in range(len(part))]


class Stopped(Exception):
    """An engine was told to stop (another part failed, or the sweep was interrupted)."""


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


# --------------------------------------------------------------------------------------
# the engine


@dataclass
class _History:
    losses: list[list[float]] = field(default_factory=list)  # per step, per member
    evals: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (row step, (4, M))
    records: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (step, (rows, M))
    death: list[int | None] = field(default_factory=list)  # step whose loss was not finite


class _Engine:
    def __init__(self, members: list[ExperimentSpec], data: Dataset, probe: bool) -> None:
        self.members = members
        self.train_spec = members[0].train  # the shared schedule
        self.n = len(members)
        self.probe = probe
        self.device = resolve_device(self.train_spec.device)
        self.stack = StackedMLP.from_specs(
            [s.net for s in members], [s.train.seed for s in members], data.n_features,
            data.n_classes, self.device)
        self.n_classes = data.n_classes
        self.x_train, self.y_train = data.x_train.to(self.device), data.y_train.to(self.device)
        self.x_test, self.y_test = data.x_test.to(self.device), data.y_test.to(self.device)
        n_train = len(self.x_train)
        self.samplers = {s.train.seed: BatchSampler(n_train, self.train_spec.batch_size,
                                                    s.train.seed) for s in members}
        self.seeds = [s.train.seed for s in members]
        self.n_layers = self.stack.n_layers
        self.widths = [w.shape[1] for w in self.stack.weights]  # out features per layer
        self.batch_size = min(self.train_spec.batch_size or n_train, n_train)
        self.layout = Q.RowLayout(self.n_layers, Q.bounded(self.stack))
        self.optimizer = _StackedSGD(self.stack, members, self.device)
        self.history = _History(death=[None] * self.n)
        self.final: np.ndarray | None = None  # (4, M) evaluation after training
        self._records: tuple[np.ndarray, np.ndarray] | None = None  # see _record_arrays

    def release(self) -> None:
        """Drop device tensors early (a GPU sweep runs many groups in one process)."""
        self.stack = None  # type: ignore[assignment]
        self.optimizer = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ the loop

    def run(self, on_step: Callable[[int], None] | None,
            stop: threading.Event | None = None) -> None:
        spec, hist = self.train_spec, self.history
        hist.evals.append((0, self._evaluate()))
        changed = False  # weights updated since the last evaluation
        alive = [True] * self.n
        alive_mask: torch.Tensor | None = None  # (M,) bool, only once someone diverged
        for step in range(spec.steps):
            if stop is not None and stop.is_set():
                raise Stopped
            if not any(alive):
                break
            last = step == spec.steps - 1
            record = self.probe and (step % spec.record_every == 0 or last)
            x, y = self._batch()
            run = self.stack.forward(x, keep_preacts=record)
            loss, grad_logits = self._loss(run.logits, y)
            values = loss.tolist()
            hist.losses.append(values)
            for m, v in enumerate(values):
                if alive[m] and not math.isfinite(v):
                    alive[m] = False
                    hist.death[m] = step
                    alive_mask = torch.tensor(alive, device=self.device)
            if not any(alive):
                break
            grads_w, grads_b = self.stack.backward(run, grad_logits, keep=record)
            prims = Q.primitives(self.stack, run, grads_w, grads_b) if record else None
            old = ([self.stack.buffer(("old", i), tuple(w.shape)).copy_(w)
                    for i, w in enumerate(self.stack.weights)] if record else None)
            self.optimizer.step(grads_w, grads_b, alive_mask)
            changed = True
            if record:
                self._close_record(step, prims, old)
            del run, grads_w, grads_b
            if step % spec.eval_every == 0 or last:
                hist.evals.append((step + 1, self._evaluate()))
                changed = False
            if on_step is not None:
                on_step(step)
        self.final = self._evaluate() if changed or not hist.evals else hist.evals[-1][1]

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's minibatch per member: x (M, B, in) or (B, in) if shared; y (M, B)."""
        drawn = {seed: s.next() for seed, s in self.samplers.items()}
        if len(drawn) == 1:
            idx = next(iter(drawn.values())).to(self.device)  # (B,)
            return self.x_train[idx], self.y_train[idx].expand(self.n, -1)
        idx = torch.stack([drawn[s] for s in self.seeds]).to(self.device)  # (M, B)
        rows = self.stack.buffer(("batch",), (idx.numel(), self.x_train.shape[1]))
        x = torch.index_select(self.x_train, 0, idx.view(-1), out=rows)
        return x.view(*idx.shape, -1), self.y_train[idx]

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member mean loss (M,) and dL_m/dlogits (M, B, C), as F.* with mean reduction."""
        m, b, c = logits.shape
        if self.train_spec.loss == "cross_entropy":
            logp = torch.log_softmax(logits, dim=-1)  # (M, B, C)
            loss = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(dim=1)
            grad = logp.exp_()
            grad.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(grad[..., :1], -1.0))
            return loss, grad.div_(b)
        diff = logits - F.one_hot(y, c).to(logits.dtype)  # (M, B, C)
        return diff.square().mean(dim=(1, 2)), diff.mul_(2.0 / (b * c))

    @torch.no_grad()
    def _evaluate(self) -> np.ndarray:
        """(4, M): train loss, train accuracy, test loss, test accuracy, as ``evaluate``."""
        rows = [*self._eval_set(self.x_train, self.y_train),
                *self._eval_set(self.x_test, self.y_test)]
        return torch.stack(rows).cpu().numpy()

    def _eval_set(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(x) == 0:
            nan = torch.full((self.n,), math.nan, dtype=torch.float64, device=self.device)
            return nan, nan
        widest = max(w.shape[1] for w in self.stack.weights)
        budget = _EVAL_ELEMENTS.get(self.device.type, 1 << 24)
        chunk = max(1, budget // (self.n * widest))
        loss_sum = torch.zeros(self.n, dtype=torch.float64, device=self.device)
        correct = torch.zeros(self.n, dtype=torch.float64, device=self.device)
        for start in range(0, len(x), chunk):
            xs, ys = x[start : start + chunk], y[start : start + chunk]
            logits = self.stack.logits(xs)  # (M, S, C)
            target = ys.expand(self.n, -1)  # (M, S)
            if self.train_spec.loss == "cross_entropy":
                per = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
            else:
                onehot = F.one_hot(target, self.n_classes).to(logits.dtype)
                per = (logits - onehot).square().mean(dim=2)
            loss_sum += per.sum(dim=1, dtype=torch.float64)
            correct += (logits.argmax(dim=2) == target).sum(dim=1)
        return loss_sum / len(x), correct / len(x)

    # ------------------------------------------------------------------ probe record

    def _close_record(self, step: int, prims: list[torch.Tensor], old: list) -> None:
        """Add the update norms, bring the step's primitives to the host in one transfer."""
        updates = [torch.linalg.vector_norm(o.sub_(w), dim=(1, 2))  # ||before - after||
                   for w, o in zip(self.stack.weights, old, strict=True)]
        host = Q.to_host(prims, updates, self.n_layers)
        self.history.records.append((step, self.layout.values(host, self.batch_size,
                                                              self.widths)))

    # ------------------------------------------------------------------ results

    def result(self, m: int) -> TrainResult:
        """Member ``m``'s TrainResult, rows in ``train()``'s order."""
        hist, spec = self.history, self.members[m].train
        death = hist.death[m]
        losses = [row[m] for row in hist.losses[: (death + 1 if death is not None else None)]]
        final_step = len(losses)
        evals = {step: values[:, m] for step, values in hist.evals}
        rows: list[tuple[int, str, int, str, float]] = _eval_rows(0, evals[0])
        for step, value in enumerate(losses):
            rows.append((step, "", 0, "loss", value))
            if step == death:
                break
            if step % spec.eval_every == 0 or step == spec.steps - 1:
                rows += _eval_rows(step + 1, evals[step + 1])
        final = self.final[:, m]  # train loss, train acc, test loss, test acc
        status = "diverged" if death is not None or not math.isfinite(final[0]) else "complete"
        if status == "diverged" or spec.steps == 0:
            rows += _eval_rows(final_step, final)
        columns = [np.asarray(col) for col in zip(*rows, strict=True)]  # step, ..., value
        if self.probe:
            columns = [np.concatenate([col, extra]) for col, extra
                       in zip(columns, self._probe_columns(m, death), strict=True)]
        frame = pd.DataFrame({
            "step": columns[0].astype(np.int64),
            "layer": columns[1].astype(object),
            "depth": columns[2].astype(np.int64),
            "quantity": columns[3].astype(object),
            "value": columns[4].astype(np.float64),
        })
        summary = {
            "final_loss": float(final[0]),
            "final_train_accuracy": float(final[1]),
            "final_test_accuracy": float(final[3]),
            "final_test_loss": float(final[2]),
            "steps_run": final_step,
            **convergence_figures(losses, spec),
        }
        if status == "diverged":
            summary["diverged_at_step"] = final_step - 1 if losses else 0
        return TrainResult(status=status, metrics=frame, summary=summary)

    def _probe_columns(self, m: int, death: int | None) -> tuple[np.ndarray, ...]:
        """Member ``m``'s probe rows as columns, in :meth:`gradprobe.Probe.frame`'s order."""
        keep = self.layout.emitted[:, m]
        steps, tables = self._record_arrays()
        n = len(steps) if death is None else int(np.searchsorted(steps, death))
        per_record = int(keep.sum())
        layers, depths, names = (np.asarray([k[i] for k in self.layout.keys], dtype=dtype)[keep]
                                 for i, dtype in ((0, object), (1, np.int64), (2, object)))
        return (np.repeat(steps[:n], per_record), np.tile(layers, n), np.tile(depths, n),
                np.tile(names, n), tables[:n, keep, m].reshape(-1))

    def _record_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Recorded steps (R,) and their tables stacked (R, rows, M), built once."""
        if self._records is None:
            records = self.history.records
            steps = np.asarray([step for step, _ in records], dtype=np.int64)
            tables = (np.stack([table for _, table in records]) if records
                      else np.zeros((0, len(self.layout.keys), self.n)))
            self._records = (steps, tables)
        return self._records


def _eval_rows(step: int, values: np.ndarray) -> list[tuple[int, str, int, str, float]]:
    return [(step, "", 0, q, float(v)) for q, v in zip(EVAL_QUANTITIES, values, strict=True)]


class _StackedSGD:
    """``torch.optim.SGD`` (plain or heavy-ball momentum) with a learning rate per member."""

    def __init__(self, stack: StackedMLP, members: list[ExperimentSpec],
                 device: torch.device) -> None:
        self.stack = stack
        self.neg_lr = torch.tensor([-s.train.lr for s in members], device=device)  # (M,)
        use_momentum = members[0].train.optimizer == "momentum"
        self.momentum = (torch.tensor([s.train.momentum for s in members], device=device)
                         if use_momentum else None)
        self.buffers: list[torch.Tensor | None] = [None] * (2 * stack.n_layers)

    def step(self, grads_w: list[torch.Tensor], grads_b: list[torch.Tensor],
             alive: torch.Tensor | None) -> None:
        """One update; members with ``alive[m] == False`` keep their parameters."""
        grads = [g for pair in zip(grads_w, grads_b, strict=True) for g in pair]
        for i, (p, g) in enumerate(zip(self.stack.parameters(), grads, strict=True)):
            shape = (-1,) + (1,) * (p.dim() - 1)
            if alive is not None:  # no NaN from a diverged member into the buffers
                g = torch.where(alive.view(shape), g, torch.zeros((), device=g.device))
            if self.momentum is not None:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = g.clone()
                else:
                    buf.mul_(self.momentum.view(shape)).add_(g)
                g = buf
            if alive is None:
                p.addcmul_(self.neg_lr.view(shape), g)
            else:
                p.copy_(torch.where(alive.view(shape), p + self.neg_lr.view(shape) * g, p))
