"""Checks a sweep passes before anything trains.

* :func:`check_configs`: every configuration's data loads, its network fits the data and
  its estimated memory fits the machine (:mod:`gradprobe.limits`).
* :func:`check_unchanged`: resuming keeps the experiments the stored runs were made with;
  a changed ``base`` would add a second set of runs under the same names.

Example:
    >>> from gradprobe.sweeps.spec import load_sweep_spec
    >>> from gradprobe.sweeps.grid import expand
    >>> check_configs(expand(load_sweep_spec({"name": "s", "base": {"data": {"name": "iris"}},
    ...                                       "grid": {"net.depth": [2, 3]}})))
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from gradprobe import budget
from gradprobe.errors import UserError
from gradprobe.sweeps.grid import Config


def check_configs(configs: list[Config]) -> None:
    """Refuse the sweep, naming the configuration, if one cannot load, build or fit."""
    from gradprobe.nets.plain import build
    from gradprobe.spec import NetSpec
    from gradprobe.sweeps.plan import _dataset

    for config in configs:
        spec = config.spec
        try:
            budget.check_experiment(spec)
            data = _dataset(spec.data)
            budget.check_experiment(spec, data.in_shape, data.n_classes, len(data.x_train))
            if spec.net.kind == "cnn":
                build(NetSpec(kind="cnn", depth=1), data.in_shape, data.n_classes)
        except UserError as exc:
            raise UserError(f"configuration {config.name}: {exc}") from None


def check_unchanged(stored: pd.DataFrame, configs: list[Config], sweep: str) -> None:
    """Refuse to resume when a stored run's configuration now resolves differently."""
    by_name = {c.name: c for c in configs}
    for row in stored.itertuples(index=False):
        config = by_name.get(row.name)
        if config is None or config.key == row.config_key:
            continue
        changes = diff(json.loads(row.spec_json), config.spec.to_dict())
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3
                                           else "")
        raise UserError(
            f"sweep {sweep!r} changed since its runs were stored ({shown or 'the experiment'}): "
            "resuming would add a second set of runs; restore the spec or give the sweep a new "
            "name"
        )


def diff(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths whose values differ: ``["train.steps: 50 -> 20"]``.

    Example:
        >>> diff({"train": {"steps": 50}}, {"train": {"steps": 20}})
        ['train.steps: 50 -> 20']
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            if key == "name" and not path:
                continue
            out += diff(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]
