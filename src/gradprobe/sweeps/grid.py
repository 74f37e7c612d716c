"""Expanding a :class:`SweepSpec` into configurations: one validated experiment each.

Each configuration carries its swept values, its :class:`ExperimentSpec`, a run name that
says what was swept (``init-study[activation=relu,seed=2]``) and a ``key``: a hash of the
fully resolved spec without its name. The key is what the store uses to recognise a
configuration it already holds, so resuming a sweep never trains one twice; it does not
change when a value moves from the grid into the base or the grid is reordered.

Example:
    >>> from gradprobe.sweeps.spec import load_sweep_spec
    >>> configs = expand(load_sweep_spec({"name": "s", "grid": {"net.depth": [2, 3]}}))
    >>> [c.name for c in configs]
    ['s[depth=2]', 's[depth=3]']
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from gradprobe.errors import UserError
from gradprobe.spec import ExperimentSpec, apply_overrides, validate_spec
from gradprobe.sweeps.spec import SweepSpec


@dataclass(frozen=True)
class Config:
    """One configuration of a sweep."""

    index: int  # position in the expansion order
    values: dict[str, Any]  # dotted key -> value as written in the sweep spec
    spec: ExperimentSpec
    key: str  # config_key: hash of the resolved spec without its name

    @property
    def name(self) -> str:
        """The run name: the sweep name plus the swept values."""
        return self.spec.name


def config_key(spec: ExperimentSpec | dict[str, Any]) -> str:
    """Stable hash of a resolved spec, its ``name`` left out (JSON with sorted keys).

    Example:
        >>> config_key({"name": "a", "net": {"depth": 3}}) == config_key({"net": {"depth": 3}})
        True
    """
    data = spec.to_dict() if isinstance(spec, ExperimentSpec) else dict(spec)
    data.pop("name", None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def display_value(value: Any) -> Any:
    """A swept value as a table cell: choices as labels (``normal(sigma_w2=1.5)``)."""
    if isinstance(value, dict) and "name" in value:
        params = ", ".join(f"{k}={v}" for k, v in value.items() if k != "name")
        return f"{value['name']}({params})" if params else str(value["name"])
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return value


def short_names(keys: list[str]) -> dict[str, str]:
    """Dotted keys -> the shortest unambiguous suffix (``net.init.sigma_w2`` -> ``sigma_w2``)."""
    out: dict[str, str] = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            short = ".".join(parts[-n:])
            clash = any(o != key and (o == short or o.endswith("." + short)) for o in keys)
            if not clash:
                break
        out[key] = short
    return out


def expand(sweep: SweepSpec) -> list[Config]:
    """Every configuration of ``sweep``, validated, in order (grid axes first, then zips).

    Raises :class:`UserError` naming the configuration when one is not a valid experiment,
    and when two configurations resolve to the same experiment.
    """
    axes: list[list[dict[str, Any]]] = [
        [{key: v} for v in values] for key, values in sweep.grid.items()
    ]
    for group in sweep.zip_groups():
        keys = list(group)
        axes.append([dict(zip(keys, row, strict=True)) for row in zip(*group.values(),
                                                                       strict=True)])
    shorts = short_names(sweep.swept_keys())
    configs: list[Config] = []
    seen: dict[str, str] = {}
    for index, combo in enumerate(itertools.product(*axes)):
        values = {k: v for part in combo for k, v in part.items()}
        label = ",".join(f"{shorts[k]}={display_value(v)}" for k, v in values.items())
        name = f"{sweep.name}[{label}]" if label else sweep.name
        data = apply_overrides({**sweep.base, "name": name}, values)
        try:
            spec = validate_spec(data, ExperimentSpec)
        except UserError as exc:
            raise UserError(f"configuration {name}: {exc}") from None
        key = config_key(spec)
        if key in seen:
            raise UserError(f"configurations {seen[key]} and {name} are the same experiment; "
                            "remove the duplicate values")
        seen[key] = name
        configs.append(Config(index=index, values=values, spec=spec, key=key))
    return configs
