"""Repair candidates that share shapes, trained as one ensemble.

Candidates whose changed models have the same structure (module types and settings,
parameter names and shapes; :func:`signature`) train together: their parameters are
stacked, member ``m`` being slice ``m`` of every stacked tensor, and one
``torch.vmap(functional_call)`` pass runs every member's forward and loss on the same
minibatch. The sum of the members' losses gives each member exactly its own gradient.
Each member keeps what training it alone with :func:`~gradprobe.diagnosis.training.train_run`
gives, within float rounding: the same seed and batches, its own learning rate, optimizer
state (SGD, heavy-ball momentum or Adam, as ``torch.optim`` computes them), gradient-norm
clipping (:class:`~gradprobe.diagnosis.recurrent_fixes.ClipGradNorm`, per member), the
same evaluations and convergence figures. A member whose loss turns NaN/Inf is frozen and
reported ``diverged`` at that step; the others go on.

What trains alone (:func:`signature` is None): models with buffers (batch norm's running
statistics change in place), hooks or active dropout, and candidates with other training
callbacks (autopilot).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from gradprobe.diagnosis.inputs import resolve_problem
    >>> problem = resolve_problem((torch.randn(32, 3), torch.randint(0, 2, (32,))))
    >>> nets = [nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)) for _ in range(2)]
    >>> signature(nets[0]) == signature(nets[1])
    True
    >>> runs = train_ensemble([Member(n, lr) for n, lr in zip(nets, (0.1, 0.5))], problem,
    ...                       steps=5)
    >>> [r.lr for r in runs], [r.steps for r in runs]
    ([0.1, 0.5], [5, 5])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from gradprobe.diagnosis.evidence import TrainingRun
from gradprobe.diagnosis.inputs import Problem, model_device
from gradprobe.diagnosis.training import run_spec, train_data, training_run
from gradprobe.kwinputs import KwInputs
from gradprobe.outputs import cast_inputs, evaluate, loss_on, model_dtype
from gradprobe.record import tidy_frame
from gradprobe.spec import TrainSpec
from gradprobe.train import BatchSampler, TrainResult, convergence_figures, seeded

#: Module attributes that are state of the module machinery, not of the computation.
_MACHINERY = ("training",)


@dataclass
class Member:
    """One model of an ensemble, trained in place: its learning rate and, optionally, the
    gradient-norm clip (``ClipGradNorm(clip)``) applied after every backward."""

    model: nn.Module
    lr: float
    clip: float | None = None


def signature(model: nn.Module) -> Hashable | None:
    """What members of one ensemble must share; None when ``model`` must train alone.

    Module names, types and public settings (a LeakyReLU's slope, a convolution's padding)
    and parameter names, shapes, dtypes and devices. Buffers (batch norm's running
    statistics), hooks and active dropout make a model train alone.

    Members whose activations differ do not share an ensemble: applying each member's own
    activation under vmap means computing every activation for every member and choosing
    (``torch.where``), which made a mixed ensemble of 4 VGG-16-style CNNs 2.4x slower than
    training them one by one (docs/performance.md, "Repair speed").

    Example:
        >>> relu, selu = (nn.Sequential(nn.Linear(3, 4), a) for a in (nn.ReLU(), nn.SELU()))
        >>> signature(relu) == signature(nn.Sequential(nn.Linear(3, 4), nn.ReLU()))
        True
        >>> signature(relu) == signature(selu)
        False
        >>> signature(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))) is None
        True
    """
    if next(model.buffers(), None) is not None:
        return None
    modules: list[tuple] = []
    for name, m in model.named_modules():
        hooks = (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks,
                 m._backward_pre_hooks)
        if any(hooks) or (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0):
            return None
        public = tuple(sorted((k, repr(v)) for k, v in vars(m).items()
                              if not k.startswith("_") and k not in _MACHINERY))
        modules.append((name, type(m), public))
    params = tuple((n, tuple(p.shape), p.dtype, p.device, p.requires_grad)
                   for n, p in model.named_parameters())
    return tuple(modules), params


def train_ensemble(members: list[Member], problem: Problem, *,
                   on_step: Callable[[int], None] | None = None, **settings: Any
                   ) -> list[TrainingRun]:
    """Train every member's model in place as ``train_run`` would train it alone.

    ``settings``: ``steps`` and optionally ``optimizer``, ``batch_size``, ``seed`` and
    ``thresholds``, as :func:`~gradprobe.diagnosis.training.run_spec` takes them. All members
    must share one :func:`signature` (not None). ``on_step(n)`` is called after each step
    with the number of members that took it. Returns one
    :class:`~gradprobe.diagnosis.evidence.TrainingRun` per member, in order.
    """
    if len({signature(m.model) for m in members} | {None}) != 2:
        raise ValueError("ensemble members must share one signature (repair_ensemble.signature)")
    specs = [run_spec(lr=m.lr, **settings) for m in members]
    device = model_device(members[0].model)
    with seeded(specs[0].seed, device):
        results = _Ensemble(members, problem, specs, device).run(on_step)
    return [training_run(r, s, problem) for r, s in zip(results, specs, strict=True)]


class _Ensemble:
    """The stacked parameters, the optimizer state and the loop (``train()``'s order)."""

    def __init__(self, members: list[Member], problem: Problem, specs: list[TrainSpec],
                 device: torch.device) -> None:
        self.members, self.specs, self.spec = members, specs, specs[0]
        self.models = [m.model.to(device) for m in members]
        for model in self.models:
            model.train()
        self.template = self.models[0]  # its forward runs every member under vmap
        self.loss_fn = problem.loss_fn
        dtype = model_dtype(self.template)
        d = train_data(problem)
        self.x, self.y = (cast_inputs(t.to(device), dtype) for t in (d.x_train, d.y_train))
        x_test, y_test = (cast_inputs(t.to(device), dtype) for t in (d.x_test, d.y_test))
        self.evals = (self.x[: d.eval_max], self.y[: d.eval_max],
                      x_test[: d.eval_max], y_test[: d.eval_max])
        self.sampler = BatchSampler(len(self.x), self.spec.batch_size, self.spec.seed)
        self.params = _stack(self.models)
        self.optimizer = _StackedOptimizer(self.params, specs, members, device)
        self.losses: list[list[float]] = [[] for _ in members]
        self.rows: list[list[tuple[int, str, int, str, float]]] = [[] for _ in members]
        self.latest: list[tuple[int, list]] = [(-2, []) for _ in members]
        self.death: list[int | None] = [None] * len(members)

    def _member_loss(self, params: dict[str, torch.Tensor], x: Any, y: torch.Tensor
                     ) -> torch.Tensor:
        if isinstance(x, KwInputs):
            out = functional_call(self.template, params, (), x.tensors)
        else:
            out = functional_call(self.template, params, (x,))
        return loss_on(out, y, self.loss_fn)[0]

    def _eval(self, m: int, step: int) -> list[tuple[int, str, int, str, float]]:
        x_train, y_train, x_test, y_test = self.evals
        values = (*evaluate(self.models[m], x_train, y_train, self.loss_fn),
                  *evaluate(self.models[m], x_test, y_test, self.loss_fn))
        names = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
        return [(step + 1, "", 0, q, v) for q, v in zip(names, values, strict=True)]

    def run(self, on_step: Callable[[int], None] | None) -> list[TrainResult]:
        n = len(self.members)
        for m in range(n):
            self.rows[m] += self._eval(m, -1)
        alive = [True] * n
        batched_loss = torch.vmap(self._member_loss, in_dims=(0, None, None))
        for step in range(self.spec.steps):
            last = step == self.spec.steps - 1
            idx = self.sampler.next().to(self.x.device)
            losses = batched_loss(self.params, self.x[idx], self.y[idx])  # (members,)
            for m, value in enumerate(losses.detach().tolist()):
                if not alive[m]:
                    continue
                self.losses[m].append(value)
                self.rows[m].append((step, "", 0, "loss", value))
                if not math.isfinite(value):
                    alive[m], self.death[m] = False, step
            if not any(alive):
                break
            for p in self.params.values():
                p.grad = None
            losses.sum().backward()  # member m's parameters get d(loss_m) only
            self.optimizer.step(alive)
            for m in range(n):
                if alive[m] and (step % self.spec.eval_every == 0 or last):
                    self.latest[m] = (step, self._eval(m, step))
                    self.rows[m] += self.latest[m][1]
            if on_step is not None:
                on_step(sum(alive))
        return [self._result(m) for m in range(n)]

    def _result(self, m: int) -> TrainResult:
        """Member ``m``'s result as ``train()`` builds it."""
        losses, rows, spec = self.losses[m], self.rows[m], self.specs[m]
        status = "complete" if self.death[m] is None else "diverged"
        final_step = len(losses)
        reuse = status != "diverged" and self.latest[m][0] == final_step - 1
        final = self.latest[m][1] if reuse else self._eval(m, final_step - 1)
        train_loss, train_acc, test_loss, test_acc = (r[4] for r in final)
        if status == "complete" and not math.isfinite(train_loss):
            status = "diverged"
        if status == "diverged":
            rows = rows + final
        summary: dict[str, Any] = {
            "final_loss": train_loss, "final_train_accuracy": train_acc,
            "final_test_accuracy": test_acc, "final_test_loss": test_loss,
            "steps_run": final_step, **convergence_figures(losses, spec),
        }
        if status == "diverged":
            summary["diverged_at_step"] = final_step - 1 if losses else 0
        return TrainResult(status=status, metrics=tidy_frame(rows), summary=summary)


def _stack(models: list[nn.Module]) -> dict[str, torch.Tensor]:
    """Every parameter stacked over the members (members on dim 0); each member's own
    parameters become views of its slice, so evaluating a member reads the stack."""
    named = [dict(model.named_parameters()) for model in models]
    stacked = {}
    for name, first in named[0].items():
        t = torch.stack([params[name].detach() for params in named])
        stacked[name] = t.requires_grad_(first.requires_grad)
        for m, params in enumerate(named):
            params[name].data = t.detach()[m]
    return stacked


class _StackedOptimizer:
    """``torch.optim`` SGD, heavy-ball momentum or Adam (their defaults, as
    :func:`gradprobe.train.make_optimizer` sets them) with a learning rate and an optional
    gradient-norm clip per member, on stacked parameters."""

    def __init__(self, params: dict[str, torch.Tensor], specs: list[TrainSpec],
                 members: list[Member], device: torch.device) -> None:
        self.params = [p for p in params.values() if p.requires_grad]
        self.kind = specs[0].optimizer
        self.momentum = specs[0].momentum
        lr = torch.tensor([s.lr for s in specs], dtype=torch.float64, device=device)
        #: per parameter: minus each member's learning rate, shaped to broadcast over it
        self.neg_lr = [(-lr).to(p.dtype).view(_members(p)) for p in self.params]
        clips = [math.inf if m.clip is None else m.clip for m in members]
        self.clip = (torch.tensor(clips, dtype=torch.float64, device=device)
                     if any(m.clip is not None for m in members) else None)
        self.state: list[list[torch.Tensor]] = [[] for _ in self.params]
        self.t = 0

    def step(self, alive: list[bool]) -> None:
        """One update from the ``.grad`` of the stacked parameters; members that are not
        ``alive`` keep their parameters."""
        grads = [p.grad for p in self.params]
        if self.clip is not None:
            _clip(grads, self.clip)
        keep = None if all(alive) else torch.tensor(alive, device=self.params[0].device)
        self.t += 1
        with torch.no_grad():
            for p, g, state, neg_lr in zip(self.params, grads, self.state, self.neg_lr,
                                           strict=True):
                if g is None:
                    continue
                if keep is not None:  # no NaN from a diverged member into the state
                    g = torch.where(keep.view(_members(p)), g, torch.zeros((), dtype=g.dtype))
                d = self._direction(g, state)
                if keep is None:
                    p.addcmul_(neg_lr, d)
                else:
                    p.copy_(torch.where(keep.view(_members(p)), p + neg_lr * d, p))

    def _direction(self, g: torch.Tensor, state: list[torch.Tensor]) -> torch.Tensor:
        """The update direction, to be scaled by each member's learning rate."""
        if self.kind == "sgd":
            return g
        if self.kind == "momentum":
            if not state:
                state.append(g.clone())
            else:
                state[0].mul_(self.momentum).add_(g)
            return state[0]
        beta1, beta2, eps = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults
        if not state:
            state += [torch.zeros_like(g), torch.zeros_like(g)]
        avg, avg_sq = state
        avg.lerp_(g, 1 - beta1)
        avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (avg_sq.sqrt() / math.sqrt(1 - beta2 ** self.t)).add_(eps)
        return avg / denom / (1 - beta1 ** self.t)


def _members(t: torch.Tensor) -> tuple[int, ...]:
    """The shape of a per-member vector broadcast over stacked tensor ``t``."""
    return (-1,) + (1,) * (t.dim() - 1)


def _clip(grads: list[torch.Tensor | None], max_norm: torch.Tensor) -> None:
    """``torch.nn.utils.clip_grad_norm_`` per member (max_norm inf: unclipped), in place."""
    present = [g for g in grads if g is not None]
    if not present:
        return
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in present], 1)
    total = torch.linalg.vector_norm(norms, dim=1)  # (members,)
    coef = torch.clamp(max_norm.to(total.dtype) / (total + 1e-6), max=1.0)
    for g in present:
        g.mul_(coef.to(g.dtype).view(_members(g)))
