"""Junk in every spec field and every choice parameter: a spec, or one UserError line.

A deterministic fuzz (every field x every junk value): ``load_spec`` either returns a spec
or raises :class:`UserError` with one line; a spec it accepts builds (where small) into a
network with finite weights, so nothing accepted fails later at build time or mid-training.
"""

from __future__ import annotations

import math

import pytest
import torch

from gradprobe import budget
from gradprobe.errors import UserError
from gradprobe.nets.activations import activation_names, get_activation
from gradprobe.nets.init import bias_init_names, get_bias_init, get_init, init_names
from gradprobe.nets.plain import build
from gradprobe.spec import ExperimentSpec, load_spec

JUNK = [None, True, False, "abc", "2e0", "[red]x", [1], {}, {"name": "x"}, math.nan, math.inf,
        -math.inf, -1, 0, 0.5, 3, 10**30, -(10**30), 1e300, "", "1e-3"]


def _leaf_fields() -> list[str]:
    out = []
    for section, model in ExperimentSpec.model_fields.items():
        sub = model.annotation
        if isinstance(sub, type) and hasattr(sub, "model_fields"):
            out += [f"{section}.{name}" for name in sub.model_fields]
        else:
            out.append(section)
    return out


def _choice_params() -> list[tuple[str, str, str]]:
    """(spec field, choice name, parameter) for every declared parameter."""
    out = []
    for name in activation_names():
        out += [("net.activation", name, p) for p in get_activation(name).params]
    for name in init_names():
        entry = get_init(name)
        out += [("net.init", name, p) for p in (*entry.params, *entry.required, *entry.one_of)]
    for name in bias_init_names():
        out += [("net.bias_init", name, p) for p in get_bias_init(name).params]
    return out


def _accepted_or_one_line(overrides: dict) -> ExperimentSpec | None:
    try:
        return load_spec({"data": {"name": "iris"}}, overrides)
    except UserError as exc:
        assert len(str(exc).splitlines()) == 1, str(exc)
        return None


def _builds_finite(spec: ExperimentSpec) -> None:
    if budget.experiment_bytes(spec, (4,), 3, 150) > 50 * 2**20 or spec.net.kind == "cnn":
        return
    model = build(spec.net, (4,), 3, seed=0)
    for p in model.parameters():
        assert torch.isfinite(p).all(), spec.net


@pytest.mark.parametrize("field", _leaf_fields())
def test_junk_in_a_field_is_a_spec_or_one_line(field):
    for value in JUNK:
        spec = _accepted_or_one_line({field: value})
        if spec is not None and abs(spec.train.lr) < 1e30:
            _builds_finite(spec)


@pytest.mark.parametrize("where,name,param", _choice_params(),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_junk_in_a_parameter_is_refused_unless_a_finite_number(where, name, param):
    for value in JUNK:
        spec = _accepted_or_one_line({where: {"name": name, param: value}})
        if spec is None:
            continue
        numeric = (isinstance(value, int | float) and not isinstance(value, bool)) or value in (
            "2e0", "1e-3")
        assert numeric, (where, name, param, value)  # only numbers are ever accepted
        got = getattr(spec.net, where.split(".")[1]).params[param]
        assert isinstance(got, int | float) and math.isfinite(got)
        if abs(got) < 1e30:  # weights of std 1e150 overflow float32: a finding, not a crash
            _builds_finite(spec)
