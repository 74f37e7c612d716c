"""Reading spec values: a bounded YAML loader and typed parameters of registry choices.

* :func:`yaml_load` is ``yaml.safe_load`` that also reads YAML 1.2 numbers such as ``2e0``
  and ``1e300`` as floats (YAML 1.1 reads them as strings). Aliases are expanded lazily by
  PyYAML (shared objects); the spec loader counts the expanded size and refuses bombs
  (:func:`gradprobe.limits.check_nodes`).
* :func:`check_params` type- and range-checks the parameters of an activation, a weight
  init or a bias init against the registry entry's declared parameters: every value is a
  finite real number within the range in :data:`RANGES`.

Example:
    >>> yaml_load("sigma_w2: 2e0")
    {'sigma_w2': 2.0}
    >>> check_params("init", "normal", {"sigma_w2": "1.5"})
    {'sigma_w2': 1.5}
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

# parameter -> (lower bound, lower bound allowed?); every value must also be finite.
RANGES: dict[str, tuple[float, bool]] = {
    "alpha": (0.0, False),
    "beta": (0.0, False),
    "gain": (0.0, False),
    "std": (0.0, False),
    "sigma_w2": (0.0, False),
    "bound": (0.0, False),
    "sigma_b2": (0.0, True),
}
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class _Loader(yaml.SafeLoader):
    """The safe loader, plus YAML 1.2 floats (``1e3``, ``2E-5``) as floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def _number(kind: str, name: str, key: str, value: Any) -> float | int:
    where = f"{kind} {name!r} parameter {key!r}"
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number, not {value!r}")
    x = float(value)
    lo, inclusive = RANGES.get(key, (-math.inf, True))
    if not math.isfinite(x) or x < lo or (x == lo and not inclusive):
        need = "" if lo == -math.inf else f" {'>=' if inclusive else '>'} {lo:g}"
        raise ValueError(f"{where} must be a finite number{need}, not {value!r}")
    small_int = isinstance(value, int) and abs(value) <= 2**31
    return value if small_int else x  # ints stay ints: labels and config keys keep them


def _value(kind: str, name: str, key: str, value: Any, default: Any) -> Any:
    """A number for numeric parameters; a value of the default's type for the others."""
    if default is None or (isinstance(default, int | float) and not isinstance(default, bool)):
        return _number(kind, name, key, value)
    if not isinstance(value, type(default)):
        raise ValueError(f"{kind} {name!r} parameter {key!r} must be a {type(default).__name__}, "
                         f"not {value!r}")
    return value


def _entry(kind: str, name: str) -> Any:
    from gradprobe.nets.activations import get_activation
    from gradprobe.nets.init import get_bias_init, get_init

    getter = {"activation": get_activation, "init": get_init, "bias_init": get_bias_init}
    return getter[kind](name) if kind in getter else None


def check_params(kind: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with every value a checked float; unknown names are left to the registry.

    Raises ``ValueError`` (a one-line message naming the parameter and what is allowed).
    """
    entry = _entry(kind, name)
    declared = set()
    if entry is not None:
        declared = set(entry.params) | set(getattr(entry, "required", ())) | set(
            getattr(entry, "one_of", ()))
    defaults = getattr(entry, "params", {})
    out = {k: _value(kind, name, k, v, defaults.get(k)) if k in declared else v
           for k, v in params.items()}
    lo, hi = out.get("min_val"), out.get("max_val")
    if kind == "activation" and (lo is not None or hi is not None):
        defaults = entry.params if entry is not None else {}
        lo = defaults.get("min_val", -1.0) if lo is None else lo
        hi = defaults.get("max_val", 1.0) if hi is None else hi
        if not lo < hi:
            raise ValueError(f"activation {name!r}: min_val must be below max_val, got "
                             f"{lo:g} and {hi:g}")
    return out
