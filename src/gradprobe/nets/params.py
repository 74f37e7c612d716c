"""Parameters of a registry entry (activation, init, bias init): defaults and unknown names.

Example:
    >>> fill_params("activation", "leaky_relu", {"negative_slope": 0.01}, {})
    {'negative_slope': 0.01}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def refuse_unknown(kind: str, name: str, given: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """``ValueError`` naming the first parameter of ``given`` that is not ``allowed``."""
    allowed = list(allowed)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"{kind} {name!r} has no parameter {unknown[0]!r} "
                         f"(allowed: {', '.join(allowed) or 'none'})")


def fill_params(kind: str, name: str, defaults: Mapping[str, Any],
                given: Mapping[str, Any] | None) -> dict[str, Any]:
    """``defaults`` overlaid with ``given``; a parameter not in ``defaults`` is refused."""
    given = dict(given or {})
    refuse_unknown(kind, name, given, defaults)
    return {**defaults, **given}
