"""What the framework callbacks share: their settings and the probe callback they drive.

Example:
    >>> d = ProbeDriver(every=5)
    >>> d.every, d.probe is None
    (5, True)
"""

from __future__ import annotations

from collections.abc import Sequence

from gradprobe.probe import Probe
from gradprobe.train import ProbeCallback


class ProbeDriver:
    """Settings and the :class:`~gradprobe.train.ProbeCallback` of a framework callback.

    Args:
        every: record every ``every``-th optimizer step (and the first).
        quantities: quantity names to record (default: all).
        log: send recorded values to the framework's loggers.
        prefix: metric-name prefix.
        on_unknown: passed to :class:`Probe` (``"warn"`` or ``"raise"``).
    """

    def __init__(
        self,
        every: int = 1,
        *,
        quantities: Sequence[str] | None = None,
        log: bool = True,
        prefix: str = "gradprobe",
        on_unknown: str = "warn",
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        if on_unknown not in ("warn", "raise"):
            raise ValueError(f"on_unknown must be 'warn' or 'raise', got {on_unknown!r}")
        self.every = every
        self.quantities = list(quantities) if quantities is not None else None
        self.log = log
        self.prefix = prefix
        self.on_unknown = on_unknown
        self.core = ProbeCallback(every, quantities=self.quantities, on_unknown=on_unknown)
        self._cursor = 0  # rows already sent to the loggers

    @property
    def probe(self) -> Probe | None:
        """The probe (None before training set it up)."""
        return self.core.probe
