"""Autopilot's options and their bounds, in one place (``train.autopilot`` in a spec).

``train.autopilot`` is ``false`` (the default), ``true`` (these defaults) or a mapping of
the fields below; unknown keys are errors.

Bounds, and why they keep a healthy run healthy:

* ``max_lr_scale``: a layer's step is multiplied by at most this (never by less than 1),
  and only up to the median relative update of the layers: no layer ever takes a larger
  relative step than the median layer already does.
* ``clip``: adaptive gradient clipping caps every layer's relative update
  ``lr * |G| / |W|`` at this per step (Brock et al. 2021 with ``lambda = clip / lr``);
  it only ever shrinks a step.
* ``revive_fraction``/``revive_shift``: a unit counts as stuck when its activation
  derivative is near zero on at least ``revive_fraction`` of the batch; its pre-activation
  is moved back by at most ``revive_shift`` times its batch mean (the bias only) and, for
  saturating activations, its incoming weights are shrunk by at most a factor 2.
* ``revive_dead``: off by default, dead ReLU-like units are left alone (measured: reviving
  them cost the 30-layer ReLU net up to 0.1 test accuracy); saturated units are revived.
* the initialisation replaces each weight matrix by its nearest orthogonal matrix of the
  same Frobenius norm (``orthogonal``), scales a layer by at most 1e3 either way and
  leaves layers whose output is constant on the batch alone.

Example:
    >>> AutopilotOptions.from_value(True).every
    10
    >>> AutopilotOptions.from_value({"every": 5, "init": "lsuv"}).init
    'lsuv'
    >>> AutopilotOptions.from_value(False) is None
    True
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError


class AutopilotOptions(BaseModel):
    """What autopilot does; every field has a safe default (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: int = Field(10, ge=1, le=100_000)  # monitoring period in steps
    init: Literal["auto", "centered", "lsuv", "unitwise", "none"] = "auto"
    init_samples: int = Field(512, ge=2)  # training samples the init measures on
    orthogonal: bool = True  # init: each weight matrix -> its nearest orthogonal one first
    target_std: float | None = Field(None, gt=0, le=10)  # None: from the activation
    trust_ratio: bool = True
    max_lr_scale: float = Field(10.0, ge=1.0, le=100.0)
    clip: float | None = Field(0.1, gt=0, le=1.0)  # None: no adaptive clipping
    revive: bool = True
    revive_dead: bool = False  # also re-centre dead units of ReLU-like activations
    revive_fraction: float = Field(1.0, gt=0.5, le=1.0)
    revive_shift: float = Field(0.25, gt=0, le=1.0)

    @classmethod
    def from_value(cls, value: bool | dict[str, Any] | AutopilotOptions | None
                   ) -> AutopilotOptions | None:
        """``False``/``None`` -> None (off); ``True`` -> defaults; a mapping -> validated."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        return cls.model_validate(value)


def parse_setting(value: Any) -> bool | AutopilotOptions:
    """``train.autopilot`` as the spec takes it: a bool or a mapping of options.

    Problems become one line naming the option and what is allowed.

    Example:
        >>> parse_setting({"evry": 5})
        Traceback (most recent call last):
        ...
        ValueError: unknown option 'evry' (allowed: every, init, init_samples, orthogonal, \
target_std, trust_ratio, max_lr_scale, clip, revive, revive_dead, revive_fraction, \
revive_shift)
    """
    if isinstance(value, bool | AutopilotOptions):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"must be true, false or a mapping of options, got {value!r}")
    try:
        return AutopilotOptions.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(AutopilotOptions.model_fields)
            raise ValueError(f"unknown option {key!r} (allowed: {allowed})") from None
        raise ValueError(f"{key}: {err['msg']}") from None


#: The type of ``TrainSpec.autopilot``: validated by :func:`parse_setting`.
AutopilotSetting = Annotated[bool | AutopilotOptions, BeforeValidator(parse_setting)]
