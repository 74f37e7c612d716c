"""Sweep specs: a ``base`` experiment plus ``grid`` and ``zip`` entries by dotted path.

``grid`` is cartesian: every combination of its values. ``zip`` entries advance together
(all their lists have one length); one ``zip`` mapping is one more axis of the product, and
a list of mappings gives several such axes::

    name: phase
    base: {net: {depth: 10, init: {name: normal, sigma_w2: 1.0}}, train: {steps: 50}}
    grid:
      net.init.sigma_w2: [0.5, 1.0, 2.0]
      train.seed: [0, 1]
    zip:
      net.depth: [5, 10, 20]
      train.lr: [0.1, 0.05, 0.02]

gives 3 x 2 x 3 = 18 configurations. Unknown keys are errors, as in experiment specs.

Example:
    >>> spec = load_sweep_spec({"name": "s", "grid": {"train.seed": [0, 1]}})
    >>> spec.size()
    2
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gradprobe import limits
from gradprobe.errors import UsageError, UserError
from gradprobe.spec import (
    apply_overrides,
    format_validation_error,
    override_items,
    read_mapping,
)


class SweepSpec(BaseModel):
    """What to sweep: a base experiment and the values to give its fields.

    ``group_size`` caps how many configurations one vectorised batch trains together (a
    bigger batch is faster up to the machine's limits; a smaller one stores results more
    often). ``engine: loop`` trains every configuration on its own with ``train()``.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: dict[str, list[Any]] | list[dict[str, list[Any]]] = Field(default_factory=dict)
    group_size: int = Field(64, ge=1)
    engine: Literal["auto", "loop"] = "auto"
    probe: bool = True

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid entry {key!r} has no values")
        return grid

    @model_validator(mode="after")
    def _axes(self) -> SweepSpec:
        seen: set[str] = set()
        for key in self.grid:
            _check_key(key)
            seen.add(key)
        for group in self.zip_groups():
            lengths = {key: len(values) for key, values in group.items()}
            if len(set(lengths.values())) > 1:
                listed = ", ".join(f"{k} has {n}" for k, n in lengths.items())
                raise ValueError(f"zip entries must have equal lengths ({listed})")
            for key, n in lengths.items():
                _check_key(key)
                if n == 0:
                    raise ValueError(f"zip entry {key!r} has no values")
                if key in seen:
                    raise ValueError(f"{key!r} is swept twice (grid and zip may not share keys)")
                seen.add(key)
        if self.size() > limits.MAX_CONFIGS:
            raise ValueError(f"the sweep expands to {self.size():.3g} configurations, more than "
                             f"the {limits.MAX_CONFIGS} allowed: split it into several sweeps")
        return self

    def zip_groups(self) -> list[dict[str, list[Any]]]:
        """The ``zip`` axes as a list (one mapping per axis; empty mappings dropped)."""
        groups = self.zip if isinstance(self.zip, list) else [self.zip]
        return [g for g in groups if g]

    def swept_keys(self) -> list[str]:
        """Dotted names of the swept fields, grid first, in the order written."""
        return list(self.grid) + [k for g in self.zip_groups() for k in g]

    def size(self) -> int:
        """Number of configurations the sweep expands to."""
        axes = [len(v) for v in self.grid.values()]
        axes += [len(next(iter(g.values()))) for g in self.zip_groups()]
        return math.prod(axes)


def _check_key(key: str) -> None:
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"{key!r} is not a dotted path like net.depth")
    if key == "name":
        raise ValueError("'name' cannot be swept (the sweep names its runs)")


def load_sweep_spec(
    source: str | Path | dict[str, Any] | SweepSpec,
    overrides: list[str] | dict[str, Any] | None = None,
) -> SweepSpec:
    """A :class:`SweepSpec` from a YAML/JSON file, a dict or a spec, plus dotted overrides.

    The experiments themselves are checked when the sweep is expanded
    (:func:`gradprobe.sweeps.grid.expand`), before anything trains: the base alone may lack
    what the grid supplies. Overrides address the sweep file itself:
    ``base.train.steps=10``, ``group_size=16``; under ``grid.`` and ``zip.`` the rest of
    the key is one swept field: ``grid.net.depth=[5, 10]``.

    Example:
        >>> load_sweep_spec({"name": "s", "base": {"net": {"depth": 3}}}).base["net"]
        {'depth': 3}
    """
    if isinstance(source, SweepSpec):
        data = source.model_dump()
    elif isinstance(source, dict):
        limits.check_nodes(source, "sweep spec")
        data = copy.deepcopy(source)
    elif isinstance(source, str | Path):
        data = read_mapping(source)
    else:
        raise UsageError(f"a sweep spec is a file path, a dict or a SweepSpec, not "
                         f"{type(source).__name__}")
    if overrides is not None:
        data = _apply_sweep_overrides(data, overrides)
    if "name" not in data and not isinstance(source, dict | SweepSpec):
        data["name"] = Path(source).stem
    return _validate(data)


def _apply_sweep_overrides(
    data: dict[str, Any], overrides: list[str] | dict[str, Any]
) -> dict[str, Any]:
    """Dotted overrides; ``grid.<field path>`` / ``zip.<field path>`` name one swept field."""
    data = copy.deepcopy(data)
    for key, value in override_items(overrides):
        head, _, rest = key.partition(".")
        if head in ("grid", "zip") and rest:
            axes = data.setdefault(head, {})
            if not isinstance(axes, dict):
                raise UserError(f"cannot set {key!r}: {head} is a list of zip groups here")
            axes[rest] = value
        else:
            data = apply_overrides(data, {key: value})
    return data


def _validate(data: dict[str, Any]) -> SweepSpec:
    """Validate a sweep mapping; problems become one-line :class:`UserError`."""
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err.get("type") == "extra_forbidden" and len(err["loc"]) == 1:
            allowed = ", ".join(SweepSpec.model_fields)
            raise UserError(f"{err['loc'][0]}: unknown key in a sweep spec "
                            f"(allowed: {allowed})") from None
        raise UserError(format_validation_error(exc)) from None
