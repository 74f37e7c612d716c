"""Evidence: what the probe measures on several batches, what theory predicts, how training goes.

:func:`collect_evidence` runs a *copy* of the model (training mode, so batch norm uses batch
statistics as in training; the original is never touched) on ``n_batches`` seeded minibatches
with the :class:`gradprobe.Probe` attached and keeps, per weight layer and per activation
module, the median over the batches of every quantity, plus the gradient profile of each
batch: a least-squares fit of ``log10(backward_signal_norm)`` against depth, whose total
change from the first weight layer to the last is what vanishing and exploding are judged
on. Theory (``gradprobe.theory.network``) is asked for its prediction where it applies.

:func:`train_run` trains a model in place for a short seeded run and reports the loss curve's
figures (the trainer's own ``convergence_figures``), for the training findings and for repair.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from gradprobe.diagnosis.inputs import resolve_problem
    >>> net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
    >>> problem = resolve_problem((torch.randn(64, 4), torch.randint(0, 2, (64,))))
    >>> ev = collect_evidence(net, problem)
    >>> ev.profile.n_layers, len(ev.profile.batches)
    (2, 4)
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from gradprobe.diagnosis.findings import DEFAULT_THRESHOLDS, Thresholds, jsonable
from gradprobe.diagnosis.inputs import Problem, model_device
from gradprobe.errors import UserError
from gradprobe.nets.init import fans

#: Evidence defaults: 4 batches of 128 samples. Four independent batches make the median
#: robust to one odd batch; 128 samples keep the per-sample norms' RMS within ~10%.
N_BATCHES = 4
BATCH_SIZE = 128
#: The whole-set evaluations of a training run use at most this many samples.
EVAL_MAX = 8192


@dataclass
class LayerRow:
    """One weight layer: medians over the evidence batches."""

    depth: int
    name: str
    type: str
    backward_signal: float  # RMS per-sample |dL/d(output)|
    weight_factor: float | None  # |dL/d input| / |dL/d output| through this layer
    between_factor: float | None  # |dL/d output of l| / |dL/d input of l+1|
    forward_signal: float
    preact_mean: float
    preact_std: float
    sigma_w2: float  # E[W^2] * fan_in
    bias_mean: float | None
    fan_in: int
    fan_out: int


@dataclass
class ActivationRow:
    """One activation module: medians (dead units: the smallest) over the batches."""

    depth: int  # of the weight layer feeding it
    name: str
    type: str  # module class name
    activation: str  # registry name where known, else the class name in lower case
    mean_sq_derivative: float
    saturated_fraction: float | None  # bounded activations only
    inactive_fraction: float
    dead_unit_fraction: float
    max_dphi: float | None  # sup |phi'| for bounded activations


@dataclass
class GradientProfile:
    """The backward signal across depth, per batch and as a median."""

    n_layers: int
    log10_change: float  # fitted log10(signal at depth 1 / at depth L), median; < 0: vanishing
    batches: list[float]  # the same, one per batch
    log10_first_last: float  # measured directly, median over batches
    fit_r2: float | None
    zero_layers: list[str]  # layers whose backward signal is exactly 0 on every batch
    nonfinite: bool  # NaN/Inf in the loss or the backward signal

    @property
    def per_layer(self) -> float:
        """Typical factor per layer: 10 ** (log10_change / (L - 1))."""
        if self.n_layers < 2 or not math.isfinite(self.log10_change):
            return 0.0 if self.log10_change == -math.inf else math.nan
        return 10 ** (self.log10_change / (self.n_layers - 1))


@dataclass
class TheoryView:
    """What mean-field theory says about this model (``applies`` False: ``reason`` says why)."""

    applies: bool
    reason: str = ""
    structural: bool = False  # a plain stack: chi1 and the critical scale are meaningful
    activation: str | None = None
    sigma_w2: float | None = None  # mean over hidden layers
    sigma_b2: float | None = None
    chi1: float | None = None
    phase: str | None = None
    predicted_log10_change: float | None = None  # of the (unsquared) signal, first / last
    critical_sigma_w2: float | None = None
    critical_saturation: float | None = None  # predicted saturated fraction at the critical q*
    notes: list[str] = field(default_factory=list)


@dataclass
class TrainingRun:
    """A short seeded training run's figures."""

    steps: int
    lr: float
    optimizer: str
    batch_size: int
    status: str  # complete | diverged
    initial_loss: float  # whole training set (<= EVAL_MAX samples), before the first step
    final_loss: float
    initial_accuracy: float | None
    final_train_accuracy: float | None
    final_test_accuracy: float | None
    stalled: bool | None  # None: too few steps to tell
    steps_to_threshold: int | None
    loss_threshold: float | None
    max_smoothed_loss: float | None
    first_loss: float | None  # the first minibatch loss
    diverged_at_step: int | None = None
    losses: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the per-step losses are left out."""
        out = asdict(self)
        out.pop("losses")
        return jsonable(out)


@dataclass
class Evidence:
    """Everything the rules read."""

    layers: list[LayerRow]
    activations: list[ActivationRow]
    profile: GradientProfile
    theory: TheoryView
    n_batches: int
    batch_size: int
    has_norm: list[str]  # qualified names of normalisation modules
    training: TrainingRun | None = None
    unknown_layers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def layer(self, depth: int) -> LayerRow | None:
        """The weight layer at ``depth``."""
        return next((r for r in self.layers if r.depth == depth), None)

    def acts_at(self, depth: int) -> list[ActivationRow]:
        """Activation modules fed by the weight layer at ``depth``."""
        return [a for a in self.activations if a.depth == depth]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return jsonable({
            "layers": [asdict(r) for r in self.layers],
            "activations": [asdict(a) for a in self.activations],
            "profile": {**asdict(self.profile), "per_layer": self.profile.per_layer},
            "theory": asdict(self.theory),
            "n_batches": self.n_batches,
            "batch_size": self.batch_size,
            "normalisation": self.has_norm,
            "training": self.training.to_dict() if self.training else None,
            "unknown_layers": self.unknown_layers,
            "notes": self.notes,
        })


# ---------------------------------------------------------------------------------- probe


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generators for the block, restoring the caller's state afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _batches(n: int, batch_size: int, n_batches: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    size = min(batch_size, n)
    out: list[torch.Tensor] = []
    order = torch.randperm(n, generator=gen)
    pos = 0
    while len(out) < n_batches:
        if pos + size > n:
            order, pos = torch.randperm(n, generator=gen), 0
        out.append(order[pos : pos + size])
        pos += size
    return out


def _profile_of(signal: dict[int, float]) -> tuple[float, float, float | None]:
    """(fitted log10 change first/last, measured log10 first/last, fit R^2) of one batch.

    The change is ``-slope * (L - 1)`` of a least-squares line through
    ``log10(signal)`` against depth: < 0 means the signal shrinks toward the input. NaN for
    non-finite signals; -inf when some layer gets exactly no signal.
    """
    depths = sorted(signal)
    depth = np.array(depths, dtype=float)
    sig = np.array([signal[d] for d in depths], dtype=float)
    if len(sig) < 2:
        return 0.0, 0.0, None
    if not np.isfinite(sig).all() or sig[-1] <= 0:
        return math.nan, math.nan, None
    if (sig <= 0).any():
        return -math.inf, -math.inf if sig[0] <= 0 else math.log10(sig[0] / sig[-1]), None
    y = np.log10(sig)
    slope, intercept = np.polyfit(depth, y, 1)
    resid = y - (slope * depth + intercept)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return -float(slope) * (depth[-1] - depth[0]), float(y[0] - y[-1]), r2


def collect_evidence(
    model: nn.Module,
    problem: Problem,
    *,
    n_batches: int = N_BATCHES,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    theory: bool = True,
) -> Evidence:
    """Measure a copy of ``model`` on ``n_batches`` seeded minibatches of ``problem``.

    Raises :class:`UserError` when the probe finds no weight layers or the model does not run.
    """
    from gradprobe.probe import Probe
    from gradprobe.probe import handlers as H

    if n_batches < 1 or batch_size < 1:
        raise UserError("n_batches and batch_size must be >= 1")
    work = copy.deepcopy(model)
    work.train()
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            probe = Probe(work, every=1)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    unknown = [f"{n} ({t})" for n, t in probe.unknown_layers]
    for w in caught:
        if "no handler" not in str(w.message):
            warnings.warn(w.message, stacklevel=2)
    if unknown:
        notes.append(f"not measured (no probe handler): {', '.join(unknown)}")

    device = model_device(work)
    nonfinite = False
    with probe, seeded(seed, device):  # dropout and other randomness inside the model
        for idx in _batches(problem.n, batch_size, n_batches, seed):
            work.zero_grad(set_to_none=True)
            x, y = problem.x[idx].to(device), problem.y[idx].to(device)
            try:
                loss = problem.loss_fn(work(x), y)
            except UserError:
                raise
            except Exception as exc:  # the model and loss are user code
                raise UserError(f"the model or loss failed: {type(exc).__name__}: {exc}") from None
            if loss.dim() != 0:
                raise UserError(f"the loss must be a scalar, got shape {tuple(loss.shape)}")
            if not torch.isfinite(loss):
                nonfinite = True
            loss.backward()
            probe.step()
    rows = probe.rows()  # (step, layer, depth, quantity, value)
    layer_info = probe.layers  # (depth, name, type)
    if not layer_info:
        raise UserError("the probe saw no weight layer run in the forward pass")
    modules = dict(work.named_modules())
    values: dict[tuple[str, str], list[float]] = {}
    by_step: dict[int, dict[int, float]] = {}  # step -> depth -> backward signal
    act_depth: dict[str, int] = {}
    for step, name, depth, quantity, value in rows:
        values.setdefault((name, quantity), []).append(value)
        if quantity == "backward_signal_norm":
            by_step.setdefault(step, {})[depth] = value
        elif quantity == "mean_sq_derivative":
            act_depth.setdefault(name, depth)

    def med(name: str, quantity: str) -> float | None:
        v = values.get((name, quantity))
        return float(np.median(v)) if v else None

    layers: list[LayerRow] = []
    for depth, name, typ in layer_info:
        mod = modules[name]
        weight = mod.weight.detach()
        fan_in, fan_out = fans(weight)
        bias = getattr(mod, "bias", None)
        layers.append(LayerRow(
            depth=depth, name=name, type=typ,
            backward_signal=med(name, "backward_signal_norm") or 0.0,
            weight_factor=med(name, "weight_factor"),
            between_factor=med(name, "between_factor"),
            forward_signal=med(name, "forward_signal_norm") or 0.0,
            preact_mean=med(name, "preact_mean") or 0.0,
            preact_std=med(name, "preact_std") or 0.0,
            sigma_w2=float(weight.double().pow(2).mean()) * fan_in,
            bias_mean=float(bias.detach().double().mean()) if bias is not None else None,
            fan_in=fan_in, fan_out=fan_out,
        ))

    activations: list[ActivationRow] = []
    for name, depth in act_depth.items():
        mod = modules[name]
        handler = H.activation_handler(mod)
        entry = getattr(handler, "entry", None)
        dead = values.get((name, "dead_unit_fraction"), [])
        activations.append(ActivationRow(
            depth=depth, name=name, type=type(mod).__name__,
            activation=entry.name if entry is not None else type(mod).__name__.lower(),
            mean_sq_derivative=med(name, "mean_sq_derivative") or 0.0,
            saturated_fraction=med(name, "saturated_fraction"),
            inactive_fraction=med(name, "inactive_fraction") or 0.0,
            dead_unit_fraction=float(min(dead)) if dead else 0.0,
            max_dphi=handler.max_dphi(mod) if handler is not None else None,
        ))

    per_batch = [_profile_of(by_step[s]) for s in sorted(by_step)]
    changes = [c for c, _, _ in per_batch]
    if any(math.isnan(c) for c in changes):
        nonfinite = True
    finite_changes = [c for c in changes if not math.isnan(c)]
    firsts = [f for _, f, _ in per_batch if not math.isnan(f)]
    r2s = [r for _, _, r in per_batch if r is not None]
    zero_layers = []
    if layers and layers[-1].backward_signal > 0:
        for r in layers:
            vals = values.get((r.name, "backward_signal_norm"), [])
            if vals and all(v == 0 for v in vals):
                zero_layers.append(r.name)
    profile = GradientProfile(
        n_layers=len(layers),
        log10_change=float(np.median(finite_changes)) if finite_changes else math.nan,
        batches=changes,
        log10_first_last=float(np.median(firsts)) if firsts else math.nan,
        fit_r2=float(np.median(r2s)) if r2s else None,
        zero_layers=zero_layers,
        nonfinite=nonfinite,
    )
    has_norm = [n for n, m in work.named_modules() if H.is_between(m)]
    view = theory_view(model, problem) if theory else TheoryView(False, "not asked for")
    return Evidence(
        layers=layers, activations=activations, profile=profile, theory=view,
        n_batches=n_batches, batch_size=min(batch_size, problem.n), has_norm=has_norm,
        unknown_layers=unknown, notes=notes + list(problem.notes),
    )


# ---------------------------------------------------------------------------------- theory


def condense(problems: tuple[str, ...] | list[str]) -> str:
    """The first reason of each kind, with a count of the rest (theory lists one per layer)."""
    if not problems:
        return ""
    kinds: dict[str, list[str]] = {}
    for p in problems:
        key = p.split(": ", 1)[1] if ": " in p else p
        kinds.setdefault(key.split("(")[0].strip(), []).append(p)
    parts = []
    for items in kinds.values():
        more = f" (and {len(items) - 1} more like it)" if len(items) > 1 else ""
        parts.append(items[0] + more)
    return "; ".join(parts)


def theory_view(model: nn.Module, problem: Problem) -> TheoryView:
    """Ask :mod:`gradprobe.theory.network` about ``model``; ``applies`` False says why not.

    ``structural`` is True for a plain feed-forward stack (the theory's structural checks
    pass) even when it is too narrow for a trustworthy prediction of *this* network's
    gradient ratio; chi1, the phase and the critical sigma_w2 (properties of the activation
    and weight scale, which the measured per-layer factors can be checked against) are then
    still given, ``predicted_log10_change`` only when the theory applies in full.
    """
    from gradprobe.theory.network import inspect_network, predict_network

    q0 = float(problem.x.double().pow(2).mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = inspect_network(model)
        if info.problems:
            return TheoryView(False, condense(info.problems))
        net = predict_network(model, q0=q0)
    pred = net.prediction
    layers = net.info.layers
    acts = [lt.activation for lt in layers[:-1] if lt.activation is not None]
    act = acts[0] if acts else None
    view = TheoryView(
        applies=net.applies,
        reason=condense(net.info.problems),
        structural=True,
        activation=act.label if act is not None else "linear",
        sigma_w2=pred.sigma_w2,
        sigma_b2=pred.sigma_b2,
        chi1=pred.chi1,
        phase=pred.phase,
        predicted_log10_change=(
            pred.log10_grad_ratio / 2
            if net.applies and pred.log10_grad_ratio is not None else None
        ),
        notes=list(pred.notes),
    )
    if act is not None and len({a.label for a in acts}) == 1:
        view.critical_sigma_w2, view.critical_saturation = _critical(act, pred.sigma_b2, q0)
    elif act is None:
        view.critical_sigma_w2, view.critical_saturation = 1.0, 0.0  # a linear net
    return view


def _critical(act: Any, sigma_b2: float, q0: float) -> tuple[float | None, float | None]:
    """The critical sigma_w2 for ``act`` and the saturated fraction predicted at its q*."""
    from gradprobe.nets.activations import activation_names, get_activation
    from gradprobe.probe.quantities import SATURATION_THRESHOLD
    from gradprobe.theory.gaussian import expect
    from gradprobe.theory.meanfield import predict
    from gradprobe.theory.phase import critical_sigma_w2

    if act.name not in activation_names():
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crit = float(critical_sigma_w2(act.name, sigma_b2, params=dict(act.params), q0=q0))
    if not math.isfinite(crit):
        return None, None
    entry = get_activation(act.name)
    if not entry.bounded:
        return crit, 0.0
    q_star = predict(act.name, crit, sigma_b2, params=dict(act.params)).q_star
    if q_star is None:
        return crit, 1.0
    limit = SATURATION_THRESHOLD * float(entry.max_dphi(**entry.resolve(dict(act.params))))

    def saturated(x: np.ndarray) -> np.ndarray:
        d = np.abs(act.dphi(x))
        return (d < limit).astype(float)

    frac = float(expect(saturated, 0.0, math.sqrt(max(q_star, 0.0)), act.kinks))
    return crit, frac


# ---------------------------------------------------------------------------------- training


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, problem: Problem
             ) -> tuple[float, float | None]:
    """(loss, accuracy or None) in eval mode on at most ``EVAL_MAX`` samples."""
    device = model_device(model)
    x, y = x[:EVAL_MAX].to(device), y[:EVAL_MAX].to(device)
    was = model.training
    model.eval()
    try:
        out = model(x)
        loss = float(problem.loss_fn(out, y))
    finally:
        model.train(was)
    acc = None
    if problem.classification and out.dim() == 2:
        acc = float((out.argmax(dim=1) == y).float().mean())
    return loss, acc


def train_run(
    model: nn.Module,
    problem: Problem,
    *,
    steps: int,
    lr: float,
    optimizer: str = "sgd",
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> TrainingRun:
    """Train ``model`` in place for ``steps`` seeded minibatch steps; NaN/Inf stops the run."""
    from pydantic import ValidationError

    from gradprobe.spec import TrainSpec, format_validation_error
    from gradprobe.train import BatchSampler, convergence_figures, make_optimizer

    if steps < 1:
        raise UserError(f"steps must be >= 1 for a training run, got {steps}")
    try:
        spec = TrainSpec(optimizer=optimizer, lr=lr, steps=steps, batch_size=batch_size,
                         seed=seed, stall_window=max(2, steps // 2),
                         stall_tolerance=thresholds.stall_improvement)
    except ValidationError as exc:
        raise UserError(f"training settings: {format_validation_error(exc)}") from None
    device = model_device(model)
    model.train()
    opt = make_optimizer(model.parameters(), spec)
    sampler = BatchSampler(problem.n, batch_size, seed)
    initial_loss, initial_acc = evaluate(model, problem.x, problem.y, problem)
    losses: list[float] = []
    status, diverged_at = "complete", None
    with seeded(seed, device):
        for step in range(steps):
            idx = sampler.next()
            x, y = problem.x[idx].to(device), problem.y[idx].to(device)
            loss = problem.loss_fn(model(x), y)
            value = float(loss.detach())
            losses.append(value)
            if not math.isfinite(value):
                status, diverged_at = "diverged", step
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    final_loss, final_acc = evaluate(model, problem.x, problem.y, problem)
    if status == "complete" and not math.isfinite(final_loss):
        status, diverged_at = "diverged", steps
    test_acc = None
    if problem.x_test is not None and len(problem.x_test):
        _, test_acc = evaluate(model, problem.x_test, problem.y_test, problem)
    figures = convergence_figures(losses, spec)
    finite = [v for v in losses if math.isfinite(v)]
    smooth = pd.Series(finite).rolling(10, min_periods=1).mean() if finite else pd.Series([])
    return TrainingRun(
        steps=len(losses), lr=lr, optimizer=optimizer, batch_size=min(batch_size, problem.n),
        status=status, initial_loss=initial_loss, final_loss=final_loss,
        initial_accuracy=initial_acc, final_train_accuracy=final_acc,
        final_test_accuracy=test_acc,
        stalled=bool(figures["stalled"]) if status == "complete" else None,
        steps_to_threshold=figures["steps_to_threshold"],
        loss_threshold=figures["loss_threshold"],
        max_smoothed_loss=float(smooth.max()) if len(smooth) else None,
        first_loss=finite[0] if finite else None,
        diverged_at_step=diverged_at, losses=losses,
    )
