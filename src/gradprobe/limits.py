"""Caps on sizes, and the memory a run will need, checked before anything is allocated.

Every cap is one constant here (``docs/cli.md`` lists them); an input over a cap, or a run
whose estimated memory exceeds what the machine allows, is refused up front with a
:class:`gradprobe.errors.UserError` (exit code 2 in the CLI) instead of swapping, hanging or
dying mid-way.

The memory budget is the smaller of the physical memory and the address-space limit
(``ulimit -v``), less what this process already maps; ``$GRADPROBE_MAX_MEMORY_GB`` lowers
it further.

Example:
    >>> estimate_bytes([64, 64], in_features=8, n_outputs=2, batch=32, n_samples=100) < 1e6
    True
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Sequence
from typing import Any

from gradprobe.errors import UserError

MAX_DEPTH = 10_000  # weight layers of a spec network
MAX_WIDTH = 1_000_000  # units (or channels) of one hidden layer
MAX_SAMPLES = 10_000_000  # n_samples of a synthetic dataset
MAX_FEATURES = 1_000_000  # n_features of a synthetic dataset
MAX_CLASSES = 10_000
MAX_STEPS = 100_000_000  # training steps of one run
MAX_CONFIGS = 10_000  # configurations of one sweep
MAX_THEORY_DEPTH = 100_000  # theory --depth
MAX_SPEC_NODES = 100_000  # values in a spec file, YAML aliases expanded
MAX_SPEC_BYTES = 1_000_000  # size of a spec file
MAX_SEED = 2**63 - 1
MAX_DATA_BYTES = 2**32  # bytes read from one IDX file

_OPTIMIZER_COPIES = {"sgd": 2, "momentum": 3, "adam": 4}  # weights + grads (+ state)
_ACTIVATION_COPIES = 6  # pre-activation, output, grads and the probe's saved tensors


def memory_budget() -> int:
    """Bytes a run may plan to use: physical memory or ``ulimit -v``, whichever is smaller."""
    limits = []
    with contextlib.suppress(ValueError, OSError, AttributeError):
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft - _mapped_bytes())
    env = os.environ.get("GRADPROBE_MAX_MEMORY_GB")
    if env:
        try:
            limits.append(int(float(env) * 2**30))
        except ValueError:
            raise UserError(f"GRADPROBE_MAX_MEMORY_GB must be a number, not {env!r}") from None
    return max(min(limits), 0) if limits else 2**62


def _mapped_bytes() -> int:
    """Virtual memory this process maps now (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def estimate_bytes(
    widths: Sequence[int], in_features: int, n_outputs: int, batch: int, n_samples: int,
    optimizer: str = "sgd", pixels: int = 1, kernel: int = 1,
) -> int:
    """A lower estimate of a run's peak memory in bytes (float32 tensors).

    ``widths`` are the hidden widths (channels for a CNN, with ``pixels = H * W`` per
    channel and ``kernel = 9`` weights per connection); ``n_samples`` rows of
    ``in_features`` are held as float64 while loading.
    """
    fans = [in_features // pixels if pixels > 1 else in_features, *widths]
    params = sum(a * b * kernel + b for a, b in zip(fans[:-1], fans[1:], strict=True))
    last = (widths[-1] if widths else in_features // max(pixels, 1)) * pixels
    params += last * n_outputs + n_outputs
    copies = _OPTIMIZER_COPIES.get(optimizer, 4)
    activations = batch * (sum(widths) * pixels + n_outputs) * _ACTIVATION_COPIES
    data = n_samples * in_features * (8 + 4)
    return 4 * (params * copies + activations) + data


def check_memory(need: int, what: str) -> None:
    """Refuse ``what`` when ``need`` bytes exceed :func:`memory_budget`."""
    budget = memory_budget()
    if need > budget:
        raise UserError(
            f"{what} needs about {_gib(need)} of memory, more than the {_gib(budget)} "
            "available (physical memory, ulimit -v or $GRADPROBE_MAX_MEMORY_GB): make it smaller"
        )


def _gib(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.3g} GiB"
    return f"{n / 2**20:.3g} MiB"


def count_nodes(value: Any) -> int:
    """Values in a nested structure as if every shared (aliased) part were copied out.

    Shared parts are counted once per reference without being walked again, so a YAML
    "billion laughs" costs as much to count as it took to write.
    """
    memo: dict[int, int] = {}

    def walk(node: Any) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if isinstance(node, dict):
            total = 1 + sum(walk(k) + walk(v) for k, v in node.items())
        elif isinstance(node, list | tuple):
            total = 1 + sum(walk(v) for v in node)
        else:
            return 1
        memo[key] = total
        return total

    return walk(value)


def check_nodes(value: Any, what: str) -> None:
    """Refuse a spec whose expanded size exceeds :data:`MAX_SPEC_NODES`."""
    try:
        n = count_nodes(value)
    except RecursionError:
        raise UserError(f"{what}: nested too deeply") from None
    if n > MAX_SPEC_NODES:
        raise UserError(
            f"{what}: expands to {n:.3g} values (YAML aliases copied out), more than the "
            f"{MAX_SPEC_NODES} allowed"
        )
