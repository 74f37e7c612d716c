"""Evidence: what the probe measures on several batches, what theory predicts, how training goes.

:func:`collect_evidence` runs a *copy* of the model (training mode, so batch norm uses batch
statistics as in training; the original is never touched) on ``n_batches`` seeded minibatches
with the :class:`gradprobe.Probe` attached and keeps, per weight layer and per activation
module, the median over the batches of every quantity, plus the gradient profile of each
batch: a least-squares fit of ``log10(backward_signal_norm)`` against depth, whose total
change from the first weight layer to the last is what vanishing and exploding are judged
on. Theory (``gradprobe.theory.network``) is asked for its prediction where it applies.

:func:`gradprobe.diagnosis.training.train_run` adds a short training run
(:class:`TrainingRun`); :mod:`gradprobe.diagnosis.theory_view` the theory's view.

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
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from gradprobe.diagnosis.findings import jsonable
from gradprobe.diagnosis.inputs import Problem, model_device
from gradprobe.diagnosis.theory_view import TheoryView, theory_view
from gradprobe.diagnosis.time_evidence import TimeRow, input_levels, time_rows
from gradprobe.errors import UserError
from gradprobe.kwinputs import KwInputs
from gradprobe.nets.layers import layer_fans
from gradprobe.outputs import cast_inputs, compute_loss, model_dtype
from gradprobe.record import SignalProfile, layer_table, profile_at, tidy_frame
from gradprobe.train import seeded

#: Evidence defaults: 4 batches of 128 samples. Four independent batches make the median
#: robust to one odd batch; 128 samples keep the per-sample norms' RMS within ~10%.
N_BATCHES = 4
BATCH_SIZE = 128


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
    time: list[TimeRow] = field(default_factory=list)  # recurrent layers, through time
    coverage: float = 1.0  # fraction of trainable parameter elements measured
    unmeasured: list[dict[str, Any]] = field(default_factory=list)  # Coverage.to_dict()'s

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
            "time": [asdict(r) for r in self.time],
            "coverage": self.coverage,
            "unmeasured": self.unmeasured,
        })


# ---------------------------------------------------------------------------------- probe


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


def batch_profile(p: SignalProfile) -> tuple[float, float, float | None]:
    """(fitted log10 change first/last, measured log10 first/last, fit R^2) of one batch.

    The fitted change (:func:`gradprobe.record.signal_profile`) is < 0 when the signal
    shrinks toward the input. NaN when a signal is non-finite; -inf (fit) when some layer
    gets exactly no signal.
    """
    if p.n_layers < 2:
        return 0.0, 0.0, None
    if not p.all_finite or math.isnan(p.attenuation):
        return math.nan, math.nan, None
    if not p.complete:
        return -math.inf, p.log10_first_last, None
    return p.fit_log10_change, p.log10_first_last, p.fit_r2


def _median(values: pd.Series) -> float:
    return float(np.median(values.to_numpy()))  # NaN when any batch is NaN


def _all_zero(values: pd.Series) -> bool:
    return bool((values.to_numpy() == 0).all())


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
    from gradprobe.probe.recurrent import TimeProbe

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

    device, dtype = model_device(work), model_dtype(work)
    nonfinite = False
    time_probe = TimeProbe(work)
    # seeded: dropout and other randomness inside the model
    with probe, time_probe, input_levels(work) as levels, seeded(seed, device):
        for idx in _batches(problem.n, batch_size, n_batches, seed):
            work.zero_grad(set_to_none=True)
            x, y = (cast_inputs(t[idx].to(device), dtype) for t in (problem.x, problem.y))
            try:
                loss, _ = compute_loss(work, x, y, problem.loss_fn)
            except UserError:
                raise
            except Exception as exc:  # the model and loss are user code
                raise UserError(f"the model or loss failed: {type(exc).__name__}: {exc}") from None
            if not torch.isfinite(loss):
                nonfinite = True
            loss.backward()
            probe.step()
            time_probe.step()
    frame = tidy_frame(probe.rows())
    covered = probe.coverage().to_dict()
    layer_info = probe.layers  # (depth, name, type)
    if not layer_info:
        raise UserError("the probe saw no weight layer run in the forward pass")
    modules = dict(work.named_modules())
    medians = layer_table(frame, index=("layer",), agg=_median).set_index("layer")
    recorded = set(zip(frame["layer"], frame["quantity"], strict=True))

    def med(name: str, quantity: str) -> float | None:
        if (name, quantity) not in recorded:
            return None
        if name not in medians.index or quantity not in medians.columns:
            return math.nan  # recorded, but NaN on every batch
        return float(medians.at[name, quantity])

    layers: list[LayerRow] = []
    for depth, name, typ in layer_info:
        mod = modules[name]
        weight = mod.weight.detach()
        fan_in, fan_out = layer_fans(mod)
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

    dead = layer_table(frame, quantities=["dead_unit_fraction"], index=("layer",), agg="min")
    dead = dict(zip(dead["layer"], dead.get("dead_unit_fraction", []), strict=False))
    act_rows = frame[frame["quantity"] == "mean_sq_derivative"].drop_duplicates("layer")
    activations: list[ActivationRow] = []
    sites = probe.activation_sites()
    for name, depth in zip(act_rows["layer"], act_rows["depth"], strict=True):
        handler, mod = sites[name]
        entry = getattr(handler, "entry", None)
        activations.append(ActivationRow(
            depth=int(depth), name=name,
            type=type(mod).__name__ if isinstance(mod, nn.Module) else "function",
            activation=entry.name if entry is not None else type(mod).__name__.lower(),
            mean_sq_derivative=med(name, "mean_sq_derivative") or 0.0,
            saturated_fraction=med(name, "saturated_fraction"),
            inactive_fraction=med(name, "inactive_fraction") or 0.0,
            dead_unit_fraction=float(dead.get(name, 0.0)),
            max_dphi=handler.max_dphi(mod) if handler is not None else None,
        ))

    steps = sorted(frame.loc[frame["quantity"] == "backward_signal_norm", "step"].unique())
    per_batch = [batch_profile(profile_at(frame, s)) for s in steps]
    changes = [c for c, _, _ in per_batch]
    if any(math.isnan(c) for c in changes):
        nonfinite = True
    finite_changes = [c for c in changes if not math.isnan(c)]
    firsts = [f for _, f, _ in per_batch if not math.isnan(f)]
    r2s = [r for _, _, r in per_batch if r is not None]
    zero_layers = []
    if layers and layers[-1].backward_signal > 0:
        zeros = layer_table(frame, quantities=["backward_signal_norm"], index=("layer",),
                            agg=_all_zero).set_index("layer")
        zero_layers = [r.name for r in layers if r.name in zeros.index
                       and bool(zeros.at[r.name, "backward_signal_norm"])]
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
    view = TheoryView(False, "not asked for")
    if theory and (isinstance(problem.x, KwInputs) or not torch.is_floating_point(problem.x)):
        view = TheoryView(False, "the inputs are token ids or named tensors, not features")
    elif theory:
        view = theory_view(model, problem)
    return Evidence(
        layers=layers, activations=activations, profile=profile, theory=view,
        n_batches=n_batches, batch_size=min(batch_size, problem.n), has_norm=has_norm,
        unknown_layers=unknown, notes=notes + list(problem.notes),
        time=time_rows(time_probe.frame(), work, levels),
        coverage=covered["fraction"], unmeasured=covered["unmeasured"],
    )


