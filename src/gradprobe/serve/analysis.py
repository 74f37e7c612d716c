"""Diagnose and Repair from the page: :func:`gradprobe.diagnose` / :func:`gradprobe.repair`
on the current configuration, streamed as their results finish.

Diagnosis sends one ``finding`` event per finding. Repair verifies one candidate at a time
(``gp.repair(..., candidates=[name])``: the seeded baseline is the same in every call, so
each verdict is the one a single call over all candidates gives, its runs equal within float
rounding: a candidate may share an ensemble with the baseline in one call and not the
other) and sends each ranked row as it is verified; a cancelled job stops between
candidates. A cancelled diagnosis stops its training run after the current step and sends
no findings.

Example:
    >>> from gradprobe.serve.config import to_spec
    >>> from gradprobe.serve.jobs import Slots
    >>> spec = to_spec({"depth": 3, "width": 8, "steps": 5, "dataset": "iris"})
    >>> job = Slots(1).start("me", "diagnose", lambda job: run_diagnose(job, spec))
    >>> job.wait(60), job.events_since(0)[-2]["type"]
    (True, 'diagnosis')
"""

from __future__ import annotations

from typing import Any

from gradprobe.serve.jobs import Job
from gradprobe.spec import ExperimentSpec

DIAGNOSE_STEPS = 100  # the diagnosis's short training run, at most
REPAIR_STEPS = 150  # each candidate's budget, at most


def _problem(spec: ExperimentSpec) -> tuple[Any, Any]:
    from gradprobe.data import load_data
    from gradprobe.nets.plain import build

    data = load_data(spec.data)
    return build(spec.net, data.in_shape, data.n_classes, seed=spec.train.seed), data


def _settings(spec: ExperimentSpec) -> dict[str, Any]:
    t = spec.train
    return {"lr": t.lr, "optimizer": t.optimizer, "batch_size": t.batch_size or 128,
            "seed": t.seed}


def run_diagnose(job: Job, spec: ExperimentSpec) -> None:
    """Diagnose the configuration's network; one event per finding, then the verdict."""
    from gradprobe.diagnosis import diagnose
    from gradprobe.serve.training import StopWhenCancelled

    model, data = _problem(spec)
    steps = min(spec.train.steps, DIAGNOSE_STEPS)
    job.emit({"type": "status", "message": f"diagnosing {spec.net.describe()} "
                                           f"(probe, theory, {steps} training steps)"})
    diag = diagnose(model, data, steps=steps, name=spec.net.describe(),
                    callbacks=[StopWhenCancelled(job)], **_settings(spec))
    if job.cancelled:  # findings of a cut-short run would mislead; "end" says why
        return
    for finding in diag.findings:
        job.emit({"type": "finding", "headline": finding.headline(), **finding.to_dict()})
    job.emit({"type": "diagnosis", "healthy": diag.healthy, "headline": diag.headline(),
              "notes": list(diag.notes)})


def run_repair(job: Job, spec: ExperimentSpec) -> None:
    """Verify each repair candidate by training; one event per verified candidate."""
    from gradprobe.diagnosis import CANDIDATES, repair

    model, data = _problem(spec)
    budget = min(spec.train.steps, REPAIR_STEPS)
    names = [c.name for c in CANDIDATES if c.name != "baseline"]
    job.emit({"type": "status", "message": f"verifying {len(names)} candidate fixes, "
                                           f"{budget} training steps each",
              "candidates": names})
    best: tuple[float, str] | None = None
    for i, name in enumerate(names):
        if job.cancelled:
            break
        result = repair(model, data, budget_steps=budget, candidates=[name], **_settings(spec))
        rows = result.to_dict()
        for row in rows["table"]:
            if row["candidate"] == "baseline" and i > 0:
                continue
            job.emit({"type": "repair", "row": row})
            if row["verdict"] in ("fixes", "helps") and isinstance(row["final_loss"], float):
                best = min(best or (row["final_loss"], name), (row["final_loss"], name))
        for skipped in rows["skipped"]:
            job.emit({"type": "skipped", **skipped})
    job.emit({"type": "repaired", "best": best[1] if best else None})
