"""Findings and THE thresholds table: every number a diagnosis decides with, and why.

A :class:`Finding` names one condition (``kind``), how bad it is (``severity``), where it is
(``layers``), the numbers it rests on (``evidence``), the factor responsible (``cause``, in
numbers) and what to change (``recommendation``).

Every threshold the rules use is a field of :class:`Thresholds`, with its reasoning beside it
(``metadata["why"]``); nothing else in :mod:`gradprobe.diagnosis` hard-codes a decision. Pass
``Thresholds(...)`` to :func:`gradprobe.diagnose` to change one. ``docs/diagnose.md`` renders
the same table (a test keeps them in step).

Example:
    >>> th = Thresholds()
    >>> th.vanishing_warning
    0.01
    >>> why("vanishing_warning").startswith("Under SGD")
    True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Kind = Literal[
    "vanishing_gradient",
    "exploding_gradient",
    "dead_relu",
    "activation_saturation",
    "poor_init_scale",
    "training_stall",
    "underfitting",
    "divergence",
    "incomplete_coverage",
]
#: The finding kinds; names are fixed (the API, the CLI's JSON and the docs use them).
KINDS: tuple[str, ...] = get_args(Kind)
GRADIENT_KINDS = ("vanishing_gradient", "exploding_gradient")
Severity = Literal["info", "warning", "error"]
SEVERITIES: tuple[str, ...] = get_args(Severity)

#: The causes a gradient finding can name (``evidence["responsible"]``).
CAUSES = ("activation derivative", "weight scale", "depth", "dead units", "normalisation")


def _t(value: float, why: str) -> Any:
    return field(default=value, metadata={"why": why})


@dataclass(frozen=True)
class Thresholds:
    """The decision table. Each field's ``metadata["why"]`` holds its reasoning.

    Ratios of backward signals are of the RMS per-sample norm of dL/d(layer output)
    (the probe's ``backward_signal_norm``), first weight layer over last, taken from a
    least-squares fit of log10(signal) against depth, median over the evidence batches.
    """

    vanishing_warning: float = _t(
        1e-2,
        "Under SGD a layer's update scales with its backward signal, so at 1/100 the first "
        "layers learn at least 100x slower than the last: one step size cannot suit both. "
        "Healthy nets stay far inside it: a 30-layer ReLU MLP with He init at width 32 "
        "measures 10^-0.5, critical-init tanh at depth 30 10^-0.6, a 3-layer ReLU MLP with "
        "PyTorch's default init 10^-0.8 (finite width and a sub-critical init at shallow "
        "depth). AUTOTRAINER uses 1e-3 on a single first/last ratio; the fit across depth is "
        "steadier, so we can afford the stricter 1e-2.",
    )
    vanishing_error: float = _t(
        1e-4,
        "At 10^-4 the first layers' updates are 10^4 times smaller than the last layers': "
        "within a few hundred SGD steps they stay where they started. A 30-layer ReLU MLP "
        "with Xavier init measures 10^-4.4 to 10^-4.9 and its loss does not move in 200 SGD "
        "steps on digits (2.3026 -> 2.3025); with He init (10^-0.5) it does.",
    )
    exploding_warning: float = _t(
        1e2,
        "Mirror of vanishing_warning: the first layers' updates are 100x those of the last, "
        "so a step size stable for the first layers leaves the last ones idle. Plain deep "
        "BatchNorm nets cross it at depth ~30 (ReLU: x1.21 per layer measured, the "
        "pi/(pi-1) of Yang et al. 2019 in squared norm), which is a real finding.",
    )
    exploding_error: float = _t(
        1e4,
        "Mirror of vanishing_error: at 10^4 any step size that moves the last layers "
        "throws the first ones far out of their initial scale in one step.",
    )
    time_vanishing_warning: float = _t(
        1e-3,
        "Through time (recurrent layers): the backward signal w.r.t. the hidden state at the "
        "first step over the last step's, median over the batches. The recurrent weights' "
        "gradient is a sum over steps of terms that scale with this signal, so at 10^-3 what "
        "the first inputs contribute is swamped by the last steps' (Bengio et al. 1994): "
        "dependencies across the sequence are not learned. The same drop defines the "
        "gradient horizon. Measured at length 100: a tanh RNN with Xavier weights on "
        "Gaussian inputs 10^-7 (x0.84 per step); the same drop at depth would already be an "
        "error, but the steps share one weight matrix, so a milder drop is no finding.",
    )
    time_vanishing_error: float = _t(
        1e-6,
        "Through time: at 10^-6 the first steps' share of the recurrent gradient is below "
        "float32 rounding of the last steps' (2^-24 ~ 6e-8 relative, summed over ~10-100 "
        "terms): it is lost.",
    )
    time_exploding_warning: float = _t(
        1e3,
        "Mirror of time_vanishing_warning: the first steps' terms dominate the recurrent "
        "gradient 1000-fold and any step size that moves the weights for the last steps "
        "overshoots; the usual remedy is gradient-norm clipping (Pascanu et al. 2013).",
    )
    time_exploding_error: float = _t(
        1e6,
        "Mirror of time_vanishing_error: the gradient norm is set by a few early steps and "
        "swings by orders of magnitude between batches.",
    )
    dead_unit_warning: float = _t(
        0.7,
        "Fraction of an activation's units whose derivative is 0 on every sample of a batch "
        "(smallest over the batches). With zero-mean weights and zero biases the sign "
        "symmetry w -> -w caps the expected dead fraction at 1/2, reached when depth makes "
        "all inputs alike (a 30-layer He ReLU MLP measures up to 0.45 in its last layers); "
        "binomial scatter at width 32 stays below 0.7 with > 99% probability per layer. "
        "Beyond it a shift is at work: negative biases, or training pushing units off.",
    )
    dead_unit_error: float = _t(
        0.95,
        "With 95% of a layer's units dead the backward signal passes through 1 unit in 20; "
        "a whole dead layer blocks it (exactly 0 below).",
    )
    saturation_warning: float = _t(
        0.5,
        "Fraction of a bounded activation's outputs within 5% of its output range from an "
        "asymptote (the probe's SATURATION_THRESHOLD: |h| > 0.9 for tanh, i.e. |z| > 1.47; "
        "h < 0.05 or > 0.95 for sigmoid, |z| > 2.94). There phi' is at most 19% of its "
        "best-case value, and it falls fast beyond: at one half, half the layer's units pass "
        "little gradient to their weights; for a zero-mean Gaussian input that takes a "
        "preactivation std above ~2.2 (tanh). DeepDiagnosis also uses one half (of inputs "
        "with |z| >= 5). A 30-layer width-64 tanh MLP at Xavier init measures 0.0 (median "
        "over layers; at most 0.11).",
    )
    saturation_error: float = _t(
        0.9,
        "Nine in ten units stuck: the layer is effectively a fixed binary code.",
    )
    init_scale_tolerance: float = _t(
        1.5,
        "poor_init_scale needs the measured sigma_w2 (E[W^2] x fan-in, mean over the hidden "
        "layers, as the theory reads it) "
        "to be off the theory's critical value by more than this factor (either way) while "
        "a vanishing/exploding finding stands. Within x1.5 (e.g. Xavier on non-square layers "
        "vs LeCun), chi1 stays within x1.5 of 1 and the gradient change comes from depth or "
        "width, not the scale.",
    )
    critical_saturation_limit: float = _t(
        0.25,
        "The critical sigma_w2 is recommended (and tried by repair) only if, at its fixed "
        "point q*, the predicted saturated fraction stays below a quarter, half of "
        "saturation_warning: the prediction is for infinite width, and measured fractions "
        "run higher. Sigmoid's critical value (sigma_w2 = 103 at sigma_b2 = 0, q* = 46) "
        "predicts 66% of outputs within 5% of 0 or 1 and measures 66% (median over layers, "
        "up to 78%) in a 30-layer width-64 MLP at init, which then reaches 17% training "
        "accuracy on digits in 200 SGD steps: no fix.",
    )
    cause_share: float = _t(
        1 / 3,
        "A factor (weights, activation derivative, normalisation) is named responsible when "
        "its product over depth accounts for at least a third of the total change in log "
        "(in the finding's direction); at most three can qualify.",
    )
    depth_only_rate: float = _t(
        0.05,
        "When every layer changes the signal by less than 10^0.05 (12%) per layer, no single "
        "factor is wrong and 'depth' is named: the change is the compounding.",
    )
    stall_improvement: float = _t(
        0.02,
        "training_stall: over the second half of the run the loss (trailing mean over 10 "
        "steps) improved by less than 2% relative while still above half its initial value. "
        "On digits at the default lr, healthy zoo nets improve by 10% (30-layer He ReLU, "
        "slow) to 70% (10-layer He ReLU) in that window over 200 steps; a 30-layer sigmoid "
        "MLP by 0.0%.",
    )
    stall_window_fraction: float = _t(
        0.5,
        "training_stall compares the smoothed loss at the end with its best value before "
        "the last half of the run (this fraction of the steps, at least 2): long enough to "
        "hold several 10-step smoothing windows at the 50-step minimum, short enough that a "
        "net which learned early and then stopped is caught.",
    )
    min_training_steps: float = _t(
        50,
        "training_stall and underfitting are judged only on runs of at least 50 steps: a "
        "healthy 2-layer batch-norm MLP on digits has not halved its loss after 20 SGD "
        "steps at lr 0.1, and the stall window (half the run) needs 25 steps to hold more "
        "than the 10-step smoothing. Divergence is judged on any run.",
    )
    underfit_loss_fraction: float = _t(
        0.5,
        "underfitting: the run did not stall or diverge, but the final training loss is "
        "still above half the initial one (the train module's default loss threshold): "
        "learning, too slowly for the budget.",
    )
    divergence_loss_factor: float = _t(
        10.0,
        "divergence without NaN: the smoothed loss rose above 10x its initial value (for "
        "cross-entropy, logits blown up far beyond chance). NaN/Inf anywhere is always "
        "divergence.",
    )
    minor_factor_log10: float = _t(
        0.02,
        "The cause text names what the between-layer factor holds beyond the activation "
        "derivative (normalisation, skip paths) only when it changes the signal by at least "
        "10^0.02 (5%) per layer: below that it is rounding between two measured factors, "
        "not a mechanism.",
    )
    init_name_tolerance: float = _t(
        0.01,
        "A critical sigma_w2 within 1% of 2 or 1 is recommended by name (he_normal, "
        "lecun_normal) rather than as normal(sigma_w2=...): the theory's value carries "
        "quadrature error of ~1e-6, far inside it, and 1% changes chi1 by 1%.",
    )
    min_coverage: float = _t(
        0.9,
        "incomplete_coverage: the fraction of trainable parameter elements whose module the "
        "probe measured (weight layers, embeddings, normalisation, recurrent layers). Below "
        "nine in ten, a tenth of the model's parameters learn from gradients nobody looked "
        "at: a verdict of 'healthy' would be about a different model. HF GPT-2, BERT and "
        "ViT measure 100%; an unregistered custom layer holding a tenth of the parameters "
        "falls below it.",
    )
    repair_margin: float = _t(
        0.1,
        "A repair candidate 'helps' when its final training loss is at least 10% below the "
        "baseline's (same seed, data order and budget); within +-10% it is 'no better'; "
        "more than 10% above, 'worse'. It 'fixes' when it also ends below half the initial "
        "loss (its own or the baseline's, whichever is lower, so a bad start cannot make it "
        "look good) without stalling, while the baseline stalled, underfit, diverged or had "
        "a gradient finding.",
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"threshold {f.name} must be a finite number, got {v!r}")
            if v <= 0:
                raise ValueError(f"threshold {f.name} must be > 0, got {v!r}")
        pairs = [("vanishing_error", "vanishing_warning"),
                 ("exploding_warning", "exploding_error"),
                 ("dead_unit_warning", "dead_unit_error"),
                 ("saturation_warning", "saturation_error"),
                 ("time_vanishing_error", "time_vanishing_warning"),
                 ("time_exploding_warning", "time_exploding_error")]
        for lo, hi in pairs:
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"threshold {lo} must not exceed {hi}")
        if self.stall_window_fraction >= 1:
            raise ValueError("threshold stall_window_fraction must be < 1")
        if self.min_coverage > 1:
            raise ValueError("threshold min_coverage must be a fraction <= 1")
        if self.vanishing_warning >= 1 or self.exploding_warning <= 1:
            raise ValueError("vanishing thresholds must be < 1 and exploding ones > 1")
        if self.time_vanishing_warning >= 1 or self.time_exploding_warning <= 1:
            raise ValueError("time_vanishing thresholds must be < 1 and time_exploding ones > 1")


DEFAULT_THRESHOLDS = Thresholds()


def why(name: str) -> str:
    """The reasoning behind threshold ``name``."""
    for f in dataclasses.fields(Thresholds):
        if f.name == name:
            return f.metadata["why"]
    raise KeyError(f"no threshold {name!r}")


def thresholds_table(th: Thresholds = DEFAULT_THRESHOLDS) -> list[dict[str, Any]]:
    """``[{"name", "value", "why"}, ...]``, the table ``docs/diagnose.md`` shows.

    Example:
        >>> thresholds_table()[0]["name"]
        'vanishing_warning'
    """
    return [{"name": f.name, "value": getattr(th, f.name), "why": f.metadata["why"]}
            for f in dataclasses.fields(th)]


@dataclass
class Finding:
    """One diagnosed condition.

    Example:
        >>> f = Finding("dead_relu", "warning", ["block2.act"], {"dead_unit_fraction": 0.8},
        ...             "80% of block2.act's units are never active", "zero the biases")
        >>> f.to_dict()["kind"]
        'dead_relu'
    """

    kind: Kind
    severity: Severity
    layers: list[str]
    evidence: dict[str, Any]
    cause: str
    recommendation: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r} (allowed: {', '.join(KINDS)})")
        if self.severity not in SEVERITIES:
            raise ValueError(
                f"unknown severity {self.severity!r} (allowed: {', '.join(SEVERITIES)})"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: non-finite floats become the strings ``"inf"``, ``"-inf"``, ``"nan"``."""
        return {
            "kind": self.kind,
            "severity": self.severity,
            "layers": list(self.layers),
            "evidence": jsonable(self.evidence),
            "cause": self.cause,
            "recommendation": self.recommendation,
        }

    def headline(self) -> str:
        """``[error] vanishing_gradient in block1.linear, ... (30 layers)``."""
        where = ""
        if self.layers:
            shown = ", ".join(self.layers[:3])
            more = f", ... ({len(self.layers)} layers)" if len(self.layers) > 3 else ""
            where = f" in {shown}{more}"
        return f"[{self.severity}] {self.kind}{where}"


def jsonable(value: Any) -> Any:
    """Plain JSON types; non-finite floats as strings, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return jsonable(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    return str(value)


def severity_rank(severity: str) -> int:
    """0 info, 1 warning, 2 error."""
    return SEVERITIES.index(severity)
