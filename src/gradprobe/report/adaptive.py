"""The demo report's "Adaptive remedy" section: autopilot against plain and static remedies.

For each sick baseline of the study (:data:`gradprobe.autopilot.study.ADAPTIVE_BASELINES`):
training curves and final numbers of the plain network, the same network under autopilot,
and the static remedies (batch norm, residual connections, ReLU with He init), all from the
same seed and budget, plus the best static candidate of the verified repair; the backward
signal per layer before (plain) and after autopilot's initialisation; and a timeline of
autopilot's interventions (its step-size multipliers per layer and check, and its notes).

Example:
    >>> adaptive_section({"adaptive": []}) is None
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from gradprobe.autopilot.records import LR_SCALE
from gradprobe.autopilot.study import ADAPTIVE_BASELINES
from gradprobe.report.build import flow_figures, headline_table, training_figures
from gradprobe.report.content import FigureSpec, Section, TableSpec, Text
from gradprobe.report.data import RunRecord, heatmap_frame

TRAINED = ("activations", "init", "remedies", "adaptive")


def _choice(value: Any) -> tuple[str, tuple]:
    if isinstance(value, str):
        return value, ()
    value = dict(value or {})
    name = value.pop("name", "")
    return name, tuple(sorted((k, float(v)) for k, v in value.items()))


def _key(act: Any, init: Any) -> tuple:
    return _choice(act)[0], _choice(init)


def _is(rec: RunRecord, act: Any, init: Any, norm: str = "none", residual: bool = False,
        autopilot: bool = False) -> bool:
    net = rec.net
    return (_key(net.get("activation"), net.get("init")) == _key(act, init)
            and net.get("norm", "none") == norm and bool(net.get("residual")) == residual
            and bool(rec.spec.get("train", {}).get("autopilot")) == autopilot)


def _find(records: Sequence[RunRecord], *args: Any, **kwargs: Any) -> RunRecord | None:
    return next((r for r in records if _is(r, *args, **kwargs)), None)


def comparison(records: Sequence[RunRecord]) -> list[tuple[RunRecord, list[RunRecord]]]:
    """(plain baseline, [plain, autopilot, batch norm, residual, ReLU + He]) per baseline
    found in ``records``; autopilot runs get ", autopilot" in their label."""
    out = []
    for act, init in ADAPTIVE_BASELINES:
        plain = _find(records, act, init)
        auto = _find(records, act, init, autopilot=True)
        if plain is None or auto is None:
            continue
        if not auto.label.endswith("autopilot"):
            auto.label += ", autopilot"
        runs = [plain, auto, _find(records, act, init, norm="batch"),
                _find(records, act, init, residual=True), _find(records, "relu", "he_normal")]
        out.append((plain, [r for r in runs if r is not None]))
    return out


def _repair_text(repair: pd.DataFrame | None) -> Text | None:
    if repair is None or repair.empty or "autopilot" not in set(repair["candidate"]):
        return None
    rows = repair.set_index("candidate")
    static = repair[~repair["candidate"].isin(["baseline", "autopilot"])
                    & repair["verdict"].isin(["fixes", "helps"])]
    auto = rows.loc["autopilot"]
    line = (f"In the verified repair of the worst configuration (section 6, its own budget), "
            f"autopilot, the only candidate that keeps the architecture, ranked "
            f"{int(auto['rank'])} of {len(repair)}: verdict '{auto['verdict']}', test "
            f"accuracy {auto['test_accuracy']:.3f}")
    if not static.empty:
        best = static.iloc[0]
        line += (f"; the best static candidate, {best['candidate']}, reached "
                 f"{best['test_accuracy']:.3f}")
    return Text(line + ".")


def _notes_table(autos: Sequence[RunRecord]) -> TableSpec | None:
    rows = [{"configuration": r.label, "step": n.get("step"), "action": n.get("action"),
             "reason": n.get("reason")}
            for r in autos for n in r.summary.get("notes", []) if n.get("source") == "autopilot"]
    if not rows:
        return None
    return TableSpec("Autopilot's interventions, with its reasons", pd.DataFrame(rows),
                     {"configuration": "configuration", "step": "step", "action": "action",
                      "reason": "reason"},
                     caption="The notes autopilot kept in each run's summary in the store "
                     "(at most one per kind of intervention and check).")


def adaptive_section(groups: Mapping[str, Sequence[RunRecord]],
                     repair: pd.DataFrame | None = None,
                     chance: float | None = None) -> Section | None:
    """The section, or None when the study has no autopilot runs."""
    records = list({r.id: r for g in TRAINED for r in groups.get(g, ())}.values())
    pairs = comparison(records)
    if not pairs:
        return None
    autos = [runs[1] for _, runs in pairs]
    blocks: list[Any] = [Text(
        "Autopilot (gradprobe.autopilot, train.autopilot: true) keeps the architecture: at "
        "the start it centres and scales every layer's pre-activations on a batch of "
        "training data; every 10 steps it raises the step of layers whose relative update "
        "lags the median (trust ratio), clips steps that would grow too large (adaptive "
        "clipping) and re-centres units that are dead or saturated. Each sick baseline is "
        "trained plain, under autopilot and with the static remedies, from the same seed "
        "for the same number of steps.")]
    blocks.append(headline_table([r for _, runs in pairs for r in runs],
                                 title="Plain vs autopilot vs static remedies"))
    repair_text = _repair_text(repair)
    if repair_text is not None:
        blocks.append(repair_text)
    for plain, runs in pairs:
        blocks += training_figures(runs, title=f"{plain.label}: plain, autopilot and "
                                   "static remedies", chance=chance)[:1]
    blocks += flow_figures(
        [r for _, runs in pairs for r in runs[:2]], "init",
        title="Backward signal per layer at the first step: plain vs after autopilot's init",
        caption="backward_signal_norm at step 0 as stored: for the plain run the network "
        "as initialised, for the autopilot run the network after its data-dependent init "
        "(which runs before the first step). Flat lines: the gradient reaches the input.")
    cells = [heatmap_frame(r, LR_SCALE).assign(label=r.label, run=r.id) for r in autos]
    cells = [c for c in cells if not c.empty]
    if cells:
        blocks.append(FigureSpec(
            "heatmap", "Timeline: autopilot's step-size multiplier per layer and check",
            {"cells": pd.concat(cells, ignore_index=True)},
            f"log10 of {LR_SCALE} as stored, at every check (x) and weight layer (y; 1 = "
            "input side): 0 is no change, 1 a step ten times the plain one (the bound).",
            slug="autopilot-timeline", options={"quantity": LR_SCALE}))
    notes = _notes_table(autos)
    if notes is not None:
        blocks.append(notes)
    return Section("adaptive", "7. Adaptive remedy", blocks)
