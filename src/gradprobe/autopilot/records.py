"""The quantity names autopilot writes to the record, and a summary of what it did.

Rows (``step, layer, depth, quantity, value``), per weight layer:

* ``autopilot_init_scale`` (step 0): factor the init multiplied the layer's weights by
  (``unitwise``: the rms of the per-unit factors); absent when ``auto`` found the net
  healthy and left it as it was;
* ``autopilot_init_shift`` (step 0): rms over units of the change of the layer's bias
  (absent likewise);
* ``autopilot_init_std`` (step 0): standard deviation of the layer's output on the init
  batch before the init (the layers before it already initialised; all unchanged when the
  net was left alone); after, it is ``autopilot_init_target``;
* ``autopilot_init_target`` (step 0): the standard deviation the init gave it (or would
  have given it);
* ``autopilot_lr_scale`` (every ``every`` steps): the factor the layer's gradient is
  multiplied by until the next check (trust ratio, in [1, ``max_lr_scale``]);
* ``autopilot_clip`` (every ``every`` steps, when > 0): fraction of the steps since the
  last check on which adaptive clipping shrank the layer's step;
* ``autopilot_revive`` (when > 0): number of the layer's units re-centred because they
  were dead or saturated.

Each kind of intervention also leaves a reason in ``loop.notes`` (kept in the run's
summary in the store): ``{"source": "autopilot", "step", "action", "layers", "reason"}``.

Example:
    >>> import pandas as pd
    >>> rows = [(0, "0", 1, INIT_SCALE, 2.0), (10, "0", 1, LR_SCALE, 3.0)]
    >>> frame = pd.DataFrame(rows, columns=["step", "layer", "depth", "quantity", "value"])
    >>> summarize(frame)
    'autopilot: init rescaled 1 layers (x0.5-x2); step sizes raised on 1 layers (up to x3)'
"""

from __future__ import annotations

import pandas as pd

INIT_SCALE = "autopilot_init_scale"
INIT_SHIFT = "autopilot_init_shift"
INIT_STD = "autopilot_init_std"
INIT_TARGET = "autopilot_init_target"
LR_SCALE = "autopilot_lr_scale"
CLIP = "autopilot_clip"
REVIVE = "autopilot_revive"
QUANTITIES = (INIT_SCALE, INIT_SHIFT, INIT_STD, INIT_TARGET, LR_SCALE, CLIP, REVIVE)

#: At most this many notes per run (one per kind of intervention and check at most).
MAX_NOTES = 60


def summarize(metrics: pd.DataFrame) -> str | None:
    """One line saying what autopilot did in a run, from its record (None: not used)."""
    rows = metrics[metrics["quantity"].isin(QUANTITIES)]
    if rows.empty:
        return None
    parts = []
    scale = rows[rows["quantity"] == INIT_SCALE]["value"]
    if not scale.empty:
        lo, hi = min(scale.min(), 1 / scale.max()), max(scale.max(), 1 / scale.min())
        parts.append(f"init rescaled {len(scale)} layers (x{lo:.2g}-x{hi:.2g})")
    elif (rows["quantity"] == INIT_STD).any():
        parts.append("init left the net as it was (healthy signal)")
    lr = rows[(rows["quantity"] == LR_SCALE) & (rows["value"] > 1.0)]
    if not lr.empty:
        parts.append(f"step sizes raised on {lr['layer'].nunique()} layers "
                     f"(up to x{lr['value'].max():.3g})")
    clip = rows[rows["quantity"] == CLIP]
    if not clip.empty:
        parts.append(f"clipping on {clip['step'].nunique()} checks "
                     f"({clip['layer'].nunique()} layers)")
    revive = rows[rows["quantity"] == REVIVE]
    if not revive.empty:
        parts.append(f"{int(revive['value'].sum())} dead or saturated units re-centred")
    return "autopilot: " + ("; ".join(parts) if parts else "watched, no intervention")
