"""Sweeps: many configurations, trained as vectorised batches, resumable, local or on Ray.

* :mod:`~gradprobe.sweeps.spec`: ``SweepSpec`` (a base experiment plus ``grid``/``zip``);
* :mod:`~gradprobe.sweeps.grid`: expansion into validated configurations with stable keys;
* :mod:`~gradprobe.sweeps.stacked`, :mod:`~gradprobe.sweeps.ensemble`,
  :mod:`~gradprobe.sweeps.quantities`: the vectorised engine and its probe quantities;
* :mod:`~gradprobe.sweeps.plan`: grouping into tasks, and what one task does;
* :mod:`~gradprobe.sweeps.backends`: local and Ray execution;
* :mod:`~gradprobe.sweeps.runner`: ``sweep()``, which alone writes the store;
* :mod:`~gradprobe.sweeps.progress`: the progress bar over the whole sweep.

Example:
    >>> import gradprobe as gp
    >>> table = gp.sweep("examples/sweeps/init-study.yaml")        # doctest: +SKIP
    >>> table.groupby("net.activation")["final_loss"].mean()      # doctest: +SKIP

The package is named ``sweeps`` so that ``gp.sweep`` is always the function: importing a
package binds its name on the parent, which would otherwise shadow a function of that name.
"""

from gradprobe.sweeps.ensemble import train_ensemble, unsupported_reason
from gradprobe.sweeps.grid import Config, config_key, expand
from gradprobe.sweeps.runner import sweep
from gradprobe.sweeps.spec import SweepSpec, load_sweep_spec

__all__ = [
    "Config",
    "SweepSpec",
    "config_key",
    "expand",
    "load_sweep_spec",
    "sweep",
    "train_ensemble",
    "unsupported_reason",
]
