"""The reproductions gradprobe knows, by name, in a fixed order.

Example:
    >>> names()[:2]
    ['he2015', 'glorot2010']
    >>> get_entry("hanin2018").name
    'hanin2018'
"""

from __future__ import annotations

import importlib

from gradprobe.errors import UserError
from gradprobe.reproduce.base import Entry

# name -> module under gradprobe.reproduce (each defines ENTRY); imported on first use
_MODULES = ("he2015", "glorot2010", "schoenholz2017", "hanin2018", "pennington2017",
            "yang2019", "saxe2014")


def names() -> list[str]:
    """Every entry's name, in listing order."""
    return list(_MODULES)


def get_entry(name: str) -> Entry:
    """The entry called ``name``; :class:`UserError` naming the allowed ones otherwise."""
    if name not in _MODULES:
        raise UserError(f"unknown reproduction {name!r} (allowed: {', '.join(_MODULES)})")
    return importlib.import_module(f"gradprobe.reproduce.{name}").ENTRY


def entries() -> list[Entry]:
    """All entries, in listing order."""
    return [get_entry(n) for n in _MODULES]
