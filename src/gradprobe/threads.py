"""The thread policy: how many torch threads a run or a sweep task trains with.

Small models lose more to the synchronisation of torch's thread team after each of their
many small operations than they gain from a second core, and on a shared machine a core
that is taken away for a while stalls every barrier. The rule (measured in
``benchmarks/thread_policy.py``, recorded in ``docs/performance.md``):

* ``threads`` given (``--threads N``, ``threads=N``): exactly that;
* else, a model with fewer than :data:`SMALL_MODEL_PARAMS` parameters (for a vectorised
  sweep group: parameters summed over its members), or a process limited to one core:
  1 thread;
* else torch's current setting (its default is one per core; ``OMP_NUM_THREADS`` sets it),
  at most the cores this process may use.

The caller's thread count is restored afterwards, also after an error or Ctrl-C.

Example:
    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with thread_policy(None, n_params=5_000) as n:
    ...     n, torch.get_num_threads()
    (1, 1)
    >>> torch.get_num_threads() == before
    True
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from gradprobe.errors import UserError

SMALL_MODEL_PARAMS = 1_000_000


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_threads(threads: Any) -> int | None:
    """``threads`` as given (None or an integer >= 1); anything else is a UserError."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UserError(f"threads must be an integer >= 1 (or None: chosen from the model "
                        f"size), not {threads!r}")
    return threads


def choose_threads(n_params: int, threads: int | None = None, cores: int | None = None) -> int:
    """The policy's thread count for a model of ``n_params`` parameters (see the module).

    Example:
        >>> choose_threads(40_000, cores=16), choose_threads(40_000, threads=4, cores=16)
        (1, 4)
    """
    if threads is not None:
        return threads
    cores = available_cores() if cores is None else cores
    if n_params < SMALL_MODEL_PARAMS or cores <= 1:
        return 1
    return max(1, min(torch.get_num_threads(), cores))


@contextlib.contextmanager
def thread_policy(threads: int | None, n_params: int) -> Iterator[int]:
    """Set torch's thread count by :func:`choose_threads`; restore the caller's on exit."""
    before = torch.get_num_threads()
    chosen = choose_threads(n_params, check_threads(threads))
    if chosen != before:
        torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def parameter_count(model: torch.nn.Module) -> int:
    """Trainable and frozen parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
