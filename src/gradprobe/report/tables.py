"""Rich tables for the terminal. They read tidy metric frames, never models.

Example:
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"step": [0], "layer": ["head"], "depth": [1],
    ...                       "quantity": ["weight_grad_norm"], "value": [0.5]})
    >>> layer_table(frame).row_count
    1
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from rich import box
from rich.table import Table

from gradprobe import record
from gradprobe.probe.quantities import QUANTITIES

ACTIVATION_QUANTITIES = ("mean_sq_derivative", "saturated_fraction", "dead_unit_fraction")
# every quantity measured on activations (from their one definition), not on weight layers
_PER_ACTIVATION = tuple(q.name for q in QUANTITIES if q.target == "activation")


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers in a short, log-friendly form: 0.0123, 1.2e-07, inf, -."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


def per_layer(frame: pd.DataFrame, step: int) -> pd.DataFrame:
    """One row per depth at ``step``: weight-layer quantities plus its activation's."""
    at = frame[(frame["step"] == step) & (frame["depth"] > 0)]
    if at.empty:
        return pd.DataFrame()
    is_act = at["quantity"].isin(_PER_ACTIVATION)
    weights = record.layer_table(at[~is_act])
    acts = record.layer_table(at[is_act], index=("depth",)).set_index("depth")
    return weights.merge(acts, left_on="depth", right_index=True, how="left").sort_values("depth")


def layer_table(frame: pd.DataFrame, title: str = "per-layer gradient flow") -> Table:
    """Gradient flow per weight layer, at the first and the last recorded step."""
    probed = frame[frame["depth"] > 0]
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 0),
                  caption="signal: backward signal norm; grad: weight-gradient norm; "
                  "between: factor from the activation; sat./dead: fractions",
                  caption_justify="left")
    if probed.empty:
        table.add_column("no probe quantities recorded")
        return table
    first, last = int(probed["step"].min()), int(probed["step"].max())
    start, end = per_layer(frame, first), per_layer(frame, last).set_index("depth")
    # Short headers so the table fits an 80-column terminal; docs/probe.md defines each.
    columns = [
        ("depth", None), ("layer", None),
        (f"signal@{first}", "backward_signal_norm"),
        (f"grad@{first}", "weight_grad_norm"),
        ("between", "between_factor"),
        ("E φ'²", "mean_sq_derivative"),
        ("sat.", "saturated_fraction"),
        ("dead", "dead_unit_fraction"),
        (f"grad@{last}", "weight_grad_norm@end"),
    ]
    for header, _ in columns:
        table.add_column(header, justify="left" if header == "layer" else "right")
    for _, row in start.iterrows():
        cells = []
        for header, key in columns:
            if key is None:
                cells.append(fmt(row[header] if header != "depth" else int(row["depth"])))
            elif key.endswith("@end"):
                name = key.removesuffix("@end")
                has = row["depth"] in end.index and name in end.columns
                cells.append(fmt(float(end.loc[row["depth"], name]) if has else None, 2))
            else:
                cells.append(fmt(float(row[key]) if key in row else None, 2))
        table.add_row(*cells)
    return table


def run_table(rows: Iterable[Mapping[str, Any]], title: str | None = None) -> Table:
    """Headline numbers, one row per run."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1),
                  caption="loss on the whole training set; train/test: accuracy; to thr.: "
                  "steps to reach the loss threshold", caption_justify="left")
    columns = [
        ("run", "run_id"), ("network", "name"), ("status", "status"),
        ("loss", "final_loss"), ("train", "final_train_accuracy"),
        ("test", "final_test_accuracy"), ("to thr.", "steps_to_threshold"),
        ("stalled", "stalled"),
    ]
    for header, key in columns:
        table.add_column(header, no_wrap=key != "name", min_width=14 if key == "name" else None)
    for row in rows:
        cells = []
        for _, key in columns:
            value = row.get(key)
            if key == "steps_to_threshold" and value is None and row.get("status"):
                value = "never"
            if key == "run_id" and value:
                value = str(value)[:8]  # a unique prefix is enough (see Store.resolve)
            cells.append(fmt(value))
        table.add_row(*cells)
    return table


def runs_listing(frame: pd.DataFrame) -> Table:
    """The store's runs, newest last."""
    table = Table()
    for header in ("id", "name", "sweep", "status", "final loss", "train acc", "test acc",
                   "seconds"):
        table.add_column(header)
    for row in frame.itertuples(index=False):
        table.add_row(
            row.id, row.name, row.sweep or "", row.status, fmt(row.final_loss),
            fmt(row.final_train_accuracy), fmt(row.final_test_accuracy), fmt(row.duration_s),
        )
    return table


def depth_attenuation_table(depths: pd.DataFrame) -> Table:
    """log10 of the backward signal at layer 1 over the output's, by network and depth,
    measured and predicted (a :func:`gradprobe.report.theory_data.depth_frame`)."""
    table = Table(title="Gradient at layer 1 / at the output, at initialisation (log10)",
                  title_justify="left")
    table.add_column("network")
    columns = sorted(depths["net_depth"].unique()) if not depths.empty else []
    for d in columns:
        table.add_column(f"{d} layers", justify="right")
    for group, rows in depths.groupby("group", sort=False):
        cells = []
        for d in columns:
            row = rows[rows["net_depth"] == d]
            if row.empty:
                cells.append("-")
                continue
            m, p = float(row["measured"].iloc[0]), float(row["predicted"].iloc[0])
            if bool(row["underflow"].iloc[0]):
                cells.append(f"underflow (theory {p:.1f})")
            else:
                cells.append(f"{m:.1f} (theory {p:.1f})" if math.isfinite(m) else "-")
        table.add_row(group, *cells)
    return table


def training_table(headline: pd.DataFrame, title: str = "Training on digits") -> Table:
    """What each configuration reached (a :func:`gradprobe.report.data.headline_frame`)."""
    table = Table(title=title, title_justify="left")
    for col in ("configuration", "‖g₁‖/‖g_L‖ at init", "steps to loss ≤ threshold",
                "train acc", "test acc"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for _, row in headline.iterrows():
        steps = row["steps_to_threshold"]
        reached = steps is not None and not (isinstance(steps, float) and math.isnan(steps))
        table.add_row(row["label"], fmt(row["attenuation_init"]),
                      str(int(steps)) if reached else "never",
                      fmt(row["final_train_accuracy"]), fmt(row["final_test_accuracy"]))
    return table
