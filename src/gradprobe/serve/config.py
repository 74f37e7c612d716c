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
from gradprobe.spec import ExperimentSpec, load_spec

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
CONTROLS = tuple(DEFAULTS)
_INTS = ("depth", "width", "batch_size", "steps", "seed")
_FLOATS = ("sigma_w2", "sigma_b2", "lr")
_CHOICES: dict[str, tuple[str, ...]] = {
    "norm": NORMS, "optimizer": OPTIMIZERS, "dataset": BUILTIN_DATASETS,
}


def normalize(config: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults overlaid with ``config`` (strings from a query string are parsed).

    Unknown controls, values of the wrong type and values beyond the playground's caps
    raise :class:`UserError` with one line.

    Example:
        >>> normalize({"depth": "5", "residual": "true"})["residual"]
        True
    """
    if not isinstance(config, Mapping):
        raise UserError(f"the configuration must be a JSON object, got {type(config).__name__}")
    unknown = sorted(set(config) - set(CONTROLS))
    if unknown:
        raise UserError(f"unknown control {unknown[0]!r} (allowed: {', '.join(CONTROLS)})")
    out = dict(DEFAULTS)
    for key, value in config.items():
        out[key] = _parse(key, value)
    return out


def _parse(key: str, value: Any) -> Any:
    if key in _INTS or key in _FLOATS:
        number = _number(key, value, integer=key in _INTS)
        lo, hi = LIMITS[key]
        if not lo <= number <= hi:
            raise UserError(f"{key}: must be between {lo:g} and {hi:g} in the playground, "
                            f"not {value!r}")
        return number
    if key == "residual":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in ("true", "false", "1", "0"):
            raise UserError(f"residual: must be true or false, not {value!r}")
        return text in ("true", "1")
    allowed = _CHOICES.get(key) or _registry(key)
    if not isinstance(value, str) or value not in allowed:
        raise UserError(f"{key}: unknown value {value!r} (allowed: {', '.join(allowed)})")
    return value


def _registry(key: str) -> tuple[str, ...]:
    return tuple(activation_names() if key == "activation" else init_names())


def _number(key: str, value: Any, *, integer: bool) -> float | int:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool):
        raise UserError(f"{key}: must be {kind}, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{key}: must be {kind}, not {value!r}") from None
    if not math.isfinite(number) or (integer and number != int(number)):
        raise UserError(f"{key}: must be {kind}, not {value!r}")
    return int(number) if integer else number


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
        init = {"name": "uniform", "bound": math.sqrt(3.0 * c["sigma_w2"] / c["width"])}
    bias: Any = {"name": "normal", "sigma_b2": c["sigma_b2"]} if c["sigma_b2"] > 0 else "zeros"
    steps = c["steps"]
    return {
        "name": "playground",
        "net": {"kind": "mlp", "depth": c["depth"], "width": c["width"],
                "activation": c["activation"], "init": init, "bias_init": bias,
                "norm": c["norm"], "residual": c["residual"]},
        "data": {"name": c["dataset"]},
        "train": {"optimizer": c["optimizer"], "lr": c["lr"], "steps": steps,
                  "batch_size": c["batch_size"], "seed": c["seed"],
                  "record_every": max(1, steps // 60), "eval_every": max(1, steps // 40)},
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
    return {
        "30-layer sigmoid, Xavier": sigmoid,
        "+ batch norm": {**sigmoid, "norm": "batch"},
        "+ residual": {**sigmoid, "residual": True},
        "ReLU, He": {**base, "activation": "relu", "init": "he_normal"},
        "tanh, ordered": {**tanh, "sigma_w2": 0.25},
        "tanh, critical": {**tanh, "sigma_w2": round(crit, 4)},
        "tanh, chaotic": {**tanh, "sigma_w2": 4.0},
    }


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
        "defaults": DEFAULTS,
        "presets": presets(),
    }


def check(config: Mapping[str, Any]) -> tuple[dict[str, Any], ExperimentSpec]:
    """``(normalised configuration, spec)``, or :class:`UserError`."""
    flat = normalize(config)
    return flat, load_spec(spec_dict(flat))
