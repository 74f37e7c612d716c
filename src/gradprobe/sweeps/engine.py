"""The vectorised engine: one part of a group trained as one stacked network.

:class:`Engine` runs :func:`gradprobe.train.train`'s loop for every member at once on a
:class:`~gradprobe.sweeps.stacked.StackedMLP`: batches per seed, loss and its gradient,
manual backward, stacked SGD, evaluation, divergence per member, and the probe's rows
from :mod:`gradprobe.sweeps.quantities`. :func:`gradprobe.sweeps.ensemble.train_ensemble`
splits a group into parts and runs an engine per part.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from gradprobe.data import Dataset
from gradprobe.spec import ExperimentSpec
from gradprobe.sweeps import quantities as Q
from gradprobe.sweeps.stacked import StackedMLP
from gradprobe.train import BatchSampler, TrainResult, convergence_figures, resolve_device

EVAL_QUANTITIES = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
# activations per evaluation chunk: cache-sized on a CPU (4 MiB), large on a GPU
_EVAL_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 26}


class Stopped(Exception):
    """An engine was told to stop (another part failed, or the sweep was interrupted)."""


@dataclass
class _History:
    losses: list[list[float]] = field(default_factory=list)  # per step, per member
    evals: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (row step, (4, M))
    records: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (step, (rows, M))
    death: list[int | None] = field(default_factory=list)  # step whose loss was not finite


class Engine:
    """Trains one part (same-shape members) as a stacked network; rows per member."""

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
        if status == "diverged":  # still record where it ended
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
