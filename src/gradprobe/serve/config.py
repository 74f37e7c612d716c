"""The playground's controls: a flat configuration, its limits, presets, and the spec it means.

The page keeps one flat mapping of control values (also its URL query string). Everything is
validated by the same spec models as the CLI (:func:`gradprobe.spec.load_spec`), plus the
playground's own caps (depth, width, steps, built-in data only); any problem is one
:class:`~gradprobe.errors.UserError` line.

Example:
    >>> spec = to_spec({"depth": "30", "activation": "sigmoid", "init": "xavier_normal"})
    >>> spec.net.depth, spec.net.activation.name, spec.data.name
    (30, 'sigmoid', 'digits')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from gradprobe.errors import UserError
from gradprobe.nets.activations import activation_names
from gradprobe.nets.init import init_names
from gradprobe.spec import ExperimentSpec, TrainSpec, load_spec

#: Data sets the page offers: scikit-learn's and the synthetic ones (never a file path).
BUILTIN_DATASETS = ("digits", "breast_cancer", "wine", "iris",
                    "teacher", "spirals", "circles", "parity")
#: Inits whose hidden-layer sigma_w2 is the slider's value (the others carry their own).
SLIDER_INITS = ("normal", "uniform")
NORMS = ("none", "batch", "layer")
OPTIMIZERS = ("sgd", "momentum", "adam")

#: (min, max) of each numeric control in the playground.
LIMITS: dict[str, tuple[float, float]] = {
    "depth": (1, 100),
    "width": (1, 512),
    "sigma_w2": (0.01, 10.0),
    "sigma_b2": (0.0, 2.0),
    "lr": (1e-6, 10.0),
    "batch_size": (1, 2048),
    "steps": (1, 5000),
    "seed": (0, 2**31 - 1),
}

DEFAULTS: dict[str, Any] = {
    "depth": 30, "width": 64, "activation": "sigmoid", "init": "xavier_normal",
    "sigma_w2": 1.0, "sigma_b2": 0.0, "norm": "none", "residual": False,
    "optimizer": "sgd", "lr": 0.05, "batch_size": 128, "steps": 300,
    "dataset": "digits", "seed": 0,
}
#: The autopilot callback's switch, offered once the spec has ``train.autopilot``.
HAS_AUTOPILOT = "autopilot" in TrainSpec.model_fields
if HAS_AUTOPILOT:
    DEFAULTS["autopilot"] = False
CONTROLS = tuple(DEFAULTS)
#: Where each control lives in the experiment spec (errors name the spec's path, as the CLI).
PATHS = {
    "depth": "net.depth", "width": "net.width", "activation": "net.activation",
    "init": "net.init", "sigma_w2": "net.init", "sigma_b2": "net.bias_init",
    "norm": "net.norm", "residual": "net.residual", "optimizer": "train.optimizer",
    "lr": "train.lr", "batch_size": "train.batch_size", "steps": "train.steps",
    "dataset": "data.name", "seed": "train.seed", "autopilot": "train.autopilot",
}


def normalize(config: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults overlaid with ``config``; only the sliders' numbers are parsed here.

    Every other value goes to the spec models as given (a query string's ``"30"`` is
    coerced there), so a value the CLI rejects gets the CLI's message.

    Example:
        >>> normalize({"depth": "5", "sigma_w2": "1.5"})["sigma_w2"]
        1.5
    """
    if not isinstance(config, Mapping):
        raise UserError(f"the configuration must be a JSON object, got {type(config).__name__}")
    unknown = sorted(set(config) - set(CONTROLS))
    if unknown:
        raise UserError(f"unknown control {unknown[0]!r} (allowed: {', '.join(CONTROLS)})")
    out = {**DEFAULTS, **config}
    for key in ("sigma_w2", "sigma_b2"):
        out[key] = _slider(key, out[key])
    if isinstance(out.get("autopilot"), str):  # a query string's switch; a mapping stays
        out["autopilot"] = {"true": True, "false": False}.get(out["autopilot"].lower(),
                                                               out["autopilot"])
    if out["dataset"] not in BUILTIN_DATASETS:
        raise UserError(f"data.name: {out['dataset']!r} is not offered here (allowed: "
                        f"{', '.join(BUILTIN_DATASETS)}; the playground takes no files)")
    return out


def _slider(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    lo, hi = LIMITS[key]
    if isinstance(value, bool) or not lo <= number <= hi:
        raise UserError(f"{key}: must be a number from {lo:g} to {hi:g}, not {value!r}")
    return number


def _caps(spec: ExperimentSpec) -> None:
    """The playground's limits on values the spec models accept."""
    values = {"depth": spec.net.depth, "width": max(spec.net.hidden_widths(), default=1),
              "lr": spec.train.lr, "batch_size": spec.train.batch_size or 1,
              "steps": spec.train.steps, "seed": spec.train.seed}
    for key, value in values.items():
        lo, hi = LIMITS[key]
        if not lo <= value <= hi:
            raise UserError(f"{PATHS[key]}: must be from {lo:g} to {hi:g} in the playground, "
                            f"not {value!r}")


def spec_dict(config: Mapping[str, Any]) -> dict[str, Any]:
    """The experiment spec (as a dict) that a normalised configuration describes.

    ``normal`` takes the sigma_w2 slider as its variance x fan-in; ``uniform`` the bound
    that gives the hidden layers the same variance. sigma_b2 > 0 draws biases from
    ``N(0, sigma_b2)``; 0 means zero biases.
    """
    c = config
    init: Any = c["init"]
    if init == "normal":
        init = {"name": "normal", "sigma_w2": c["sigma_w2"]}
    elif init == "uniform":
        width = _width(c["width"])
        init = {"name": "uniform", "bound": math.sqrt(3.0 * c["sigma_w2"] / width)}
    bias: Any = {"name": "normal", "sigma_b2": c["sigma_b2"]} if c["sigma_b2"] > 0 else "zeros"
    steps = c["steps"]
    extra = {"autopilot": c["autopilot"]} if HAS_AUTOPILOT else {}
    every = max(1, int(steps) // 60) if str(steps).isdigit() else 1
    return {
        "name": "playground",
        "net": {"kind": "mlp", "depth": c["depth"], "width": c["width"],
                "activation": c["activation"], "init": init, "bias_init": bias,
                "norm": c["norm"], "residual": c["residual"]},
        "data": {"name": c["dataset"]},
        "train": {"optimizer": c["optimizer"], "lr": c["lr"], "steps": steps,
                  "batch_size": c["batch_size"], "seed": c["seed"],
                  "record_every": every, "eval_every": max(1, every * 3 // 2), **extra},
    }


def to_spec(config: Mapping[str, Any]) -> ExperimentSpec:
    """Validate ``config`` (playground caps, then the CLI's spec models) into a spec."""
    return check(config)[1]


@lru_cache(maxsize=1)
def presets() -> dict[str, dict[str, Any]]:
    """The study's configurations, by label (each a full configuration)."""
    from gradprobe.theory import critical_sigma_w2

    base = dict(DEFAULTS)
    sigmoid = {**base, "activation": "sigmoid", "init": "xavier_normal"}
    tanh = {**base, "activation": "tanh", "init": "normal", "sigma_b2": 0.05}
    crit = float(critical_sigma_w2("tanh", sigma_b2=0.05))
    found = {
        "30-layer sigmoid, Xavier": sigmoid,
        "+ batch norm": {**sigmoid, "norm": "batch"},
        "+ residual": {**sigmoid, "residual": True},
        "ReLU, He": {**base, "activation": "relu", "init": "he_normal"},
        "tanh, ordered": {**tanh, "sigma_w2": 0.25},
        "tanh, critical": {**tanh, "sigma_w2": round(crit, 4)},
        "tanh, chaotic": {**tanh, "sigma_w2": 4.0},
    }
    if HAS_AUTOPILOT:
        found["autopilot"] = {**sigmoid, "autopilot": True}
    return found


def options() -> dict[str, Any]:
    """What the page's controls offer: choices, limits, defaults and presets."""
    return {
        "controls": list(CONTROLS),
        "activations": activation_names(),
        "inits": init_names(),
        "slider_inits": list(SLIDER_INITS),
        "norms": list(NORMS),
        "optimizers": list(OPTIMIZERS),
        "datasets": list(BUILTIN_DATASETS),
        "limits": {k: list(v) for k, v in LIMITS.items()},
        "paths": PATHS,
        "defaults": DEFAULTS,
        "presets": presets(),
    }


def _width(value: Any) -> float:
    try:
        return max(float(value), 1.0)
    except (TypeError, ValueError):
        return 1.0  # the spec models report the bad width


def check(config: Mapping[str, Any]) -> tuple[dict[str, Any], ExperimentSpec]:
    """``(normalised configuration, spec)``, or :class:`UserError`."""
    flat = normalize(config)
    spec = load_spec(spec_dict(flat))
    _caps(spec)
    return flat, spec
