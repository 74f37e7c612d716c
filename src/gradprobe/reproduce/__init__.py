"""Classic results of the field, one command each (``gradprobe reproduce NAME``).

Each entry (one module per paper) states the paper's claims with their numbers and where
they come from, runs the experiment at a documented scale with gradprobe's own API
(``theory``, the probe, the sweep engine, ``train``), and judges paper vs measured with a
tolerance argued from that scale (docs/reproductions.md).

Example:
    >>> from gradprobe.reproduce import names
    >>> "yang2019" in names()
    True
"""

from gradprobe.reproduce.base import Claim, Entry, Reproduction
from gradprobe.reproduce.registry import entries, get_entry, names
from gradprobe.reproduce.runner import exit_code, load, reproduce, save

__all__ = ["Claim", "Entry", "Reproduction", "entries", "exit_code", "get_entry", "load",
           "names", "reproduce", "save"]
