"""``gp.repair``: try candidate fixes on copies, train each from the same seed, rank them.

Each candidate is a change to a copy of the model (:mod:`gradprobe.diagnosis.surgery`) or to
the learning rate. The baseline (the model unchanged) and every candidate train with the
same seed, data order, optimizer and budget. The result is a ranked table: the gradient
change first/last at initialisation before (baseline) and after (candidate), the gradient
findings still standing at initialisation, the loss after the budget, accuracy, and a
verdict against the baseline (thresholds: ``repair_margin``, ``underfit_loss_fraction``).
Candidates that cannot be applied to this model are listed with the reason.

Example:
    >>> fixes = repair(model, data="digits", budget_steps=200)    # doctest: +SKIP
    >>> print(fixes)                                               # doctest: +SKIP
    >>> better = fixes.model(fixes.best)                           # doctest: +SKIP
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from rich.markup import escape
from torch import nn

from gradprobe.diagnosis.diagnosis import DEFAULT_LR, DEFAULT_OPTIMIZER, clone, prepare
from gradprobe.diagnosis.evidence import BATCH_SIZE, Evidence, TrainingRun, collect_evidence
from gradprobe.diagnosis.findings import DEFAULT_THRESHOLDS, Thresholds, jsonable
from gradprobe.diagnosis.inputs import LossFn, Problem
from gradprobe.diagnosis.recurrent_fixes import (
    ClipGradNorm,
    forget_bias_one,
    has_recurrent,
    recurrent_init,
    to_gated,
)
from gradprobe.diagnosis.repair_runs import MAX_MEMBERS, Job, train_candidates
from gradprobe.diagnosis.rules import dead_findings, fmt10, gradient_findings, time_findings
from gradprobe.diagnosis.surgery import (
    CannotApply,
    add_residual,
    insert_batchnorm,
    reinitialise,
    swap_activations,
)
from gradprobe.errors import UserError
from gradprobe.progress import ProgressBar
from gradprobe.threads import check_threads, parameter_count, thread_policy
from gradprobe.train import Callback

#: Evidence batches per candidate: two keep the gradient columns cheap; the verdict rests
#: on training, not on them.
REPAIR_EVIDENCE_BATCHES = 2

VERDICTS = ("fixes", "helps", "baseline", "no better", "worse", "diverged")


@dataclass
class RepairContext:
    """What a candidate may look at: sample inputs, the seed, the baseline's evidence."""

    x: torch.Tensor  # a few training inputs, for shapes and forward order
    seed: int
    evidence: Evidence
    thresholds: Thresholds


Build = Callable[[nn.Module, RepairContext], tuple[nn.Module, str]]


@dataclass(frozen=True)
class Candidate:
    """One fix to try: ``build(model, ctx) -> (changed copy, what changed)``; may raise
    :class:`CannotApply`. ``lr_factor`` scales the learning rate for this candidate;
    ``train`` replaces :func:`train_run` (same arguments) for candidates that act during
    training (autopilot)."""

    name: str
    kind: str  # baseline | activation | init | norm | residual | lr | adaptive | recurrent | clip
    build: Build
    lr_factor: float = 1.0
    #: training-loop callbacks for candidates that act while training (autopilot, clipping)
    callbacks: Callable[[Problem], Sequence[Callback]] | None = None


def _unchanged(model: nn.Module, ctx: RepairContext) -> tuple[nn.Module, str]:
    return copy.deepcopy(model), "unchanged"


def _swap(act: str, init: str, **params: Any) -> Build:
    def build(model: nn.Module, ctx: RepairContext) -> tuple[nn.Module, str]:
        swapped, what = swap_activations(model, act, **params)
        out, how = reinitialise(swapped, init, ctx.seed)
        return out, f"{what}; {how}"

    return build


def _reinit(init: str) -> Build:
    def build(model: nn.Module, ctx: RepairContext) -> tuple[nn.Module, str]:
        return reinitialise(model, init, ctx.seed)

    return build


_GAINS = {"sigmoid", "tanh", "relu", "leaky_relu", "selu", "linear"}


def _orthogonal(model: nn.Module, ctx: RepairContext) -> tuple[nn.Module, str]:
    kinds = {a.activation for a in ctx.evidence.activations}
    if len(kinds) == 1 and next(iter(kinds)) in _GAINS:
        act = next(iter(kinds))
        gain = nn.init.calculate_gain(act, 0.01 if act == "leaky_relu" else None)
        out, what = reinitialise(model, "orthogonal", ctx.seed, gain=gain)
        return out, f"{what} (torch's gain for {act})"
    out, what = reinitialise(model, "orthogonal", ctx.seed, gain=1.0)
    return out, f"{what} (gain 1: no single known activation to take a gain from)"


def _critical(model: nn.Module, ctx: RepairContext) -> tuple[nn.Module, str]:
    t = ctx.evidence.theory
    if not t.structural:
        raise CannotApply(f"theory does not apply: {t.reason}")
    if t.critical_sigma_w2 is None:
        raise CannotApply(f"theory finds no critical sigma_w2 for {t.activation}")
    sat = t.critical_saturation
    if sat is not None and sat >= ctx.thresholds.critical_saturation_limit:
        raise CannotApply(
            f"the critical sigma_w2 for {t.activation} is {t.critical_sigma_w2:.3g}, where "
            f"{sat:.0%} of its outputs would saturate (limit "
            f"{ctx.thresholds.critical_saturation_limit:.0%})"
        )
    return reinitialise(model, "normal", ctx.seed, sigma_w2=float(t.critical_sigma_w2))


def _batchnorm(model: nn.Module, ctx: RepairContext) -> tuple[nn.Module, str]:
    return insert_batchnorm(model, ctx.x)


def _residual(model: nn.Module, ctx: RepairContext) -> tuple[nn.Module, str]:
    return add_residual(model, ctx.x)


def _autopilot_build(model: nn.Module, ctx: RepairContext) -> tuple[nn.Module, str]:
    from gradprobe.autopilot.repair import build

    return build(model, ctx)


def _autopilot_callbacks(problem: Problem) -> list[Callback]:
    from gradprobe.autopilot.repair import callbacks

    return callbacks(problem)


def _gated(kind: str) -> Build:
    def build(model: nn.Module, ctx: RepairContext) -> tuple[nn.Module, str]:
        return to_gated(model, kind, ctx.x, ctx.seed)

    return build


def _recurrent_init(how: str) -> Build:
    def build(model: nn.Module, ctx: RepairContext) -> tuple[nn.Module, str]:
        return recurrent_init(model, how, ctx.seed)

    return build


def _clip_model(model: nn.Module, ctx: RepairContext) -> tuple[nn.Module, str]:
    return copy.deepcopy(model), "unchanged model; gradient norm clipped to 1 in training"


#: Candidates for models with recurrent layers (tried by default only on those).
RNN_CANDIDATES: tuple[Candidate, ...] = (
    Candidate("lstm for rnn", "recurrent", _gated("LSTM")),
    Candidate("gru for rnn", "recurrent", _gated("GRU")),
    Candidate("rnn orthogonal recurrent", "recurrent", _recurrent_init("orthogonal")),
    Candidate("irnn", "recurrent", _recurrent_init("identity")),
    Candidate("lstm forget bias 1", "recurrent", lambda m, ctx: forget_bias_one(m)),
    Candidate("clip grad norm 1", "clip", _clip_model,
              callbacks=lambda problem: [ClipGradNorm(1.0)]),
)

#: The candidates, in the order they are tried.
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("baseline", "baseline", _unchanged),
    Candidate("relu + he_normal", "activation", _swap("relu", "he_normal")),
    Candidate("leaky_relu + he_normal", "activation", _swap("leaky_relu", "he_normal")),
    Candidate("selu + lecun_normal", "activation", _swap("selu", "lecun_normal")),
    Candidate("init he_normal", "init", _reinit("he_normal")),
    Candidate("init lecun_normal", "init", _reinit("lecun_normal")),
    Candidate("init orthogonal", "init", _orthogonal),
    Candidate("init critical (theory)", "init", _critical),
    Candidate("batchnorm", "norm", _batchnorm),
    Candidate("residual", "residual", _residual),
    Candidate("autopilot", "adaptive", _autopilot_build, callbacks=_autopilot_callbacks),
    Candidate("lr x10", "lr", _unchanged, lr_factor=10.0),
    Candidate("lr x0.1", "lr", _unchanged, lr_factor=0.1),
)


@dataclass
class RepairResult:
    """The ranked table, the candidates that could not be applied, and the changed models."""

    table: pd.DataFrame
    skipped: list[tuple[str, str]]
    budget_steps: int
    lr: float
    optimizer: str
    seed: int
    models: dict[str, nn.Module] = field(default_factory=dict, repr=False)
    runs: dict[str, TrainingRun] = field(default_factory=dict, repr=False)

    @property
    def best(self) -> str | None:
        """The top-ranked candidate whose verdict is ``fixes`` or ``helps`` (None if none)."""
        good = self.table[self.table["verdict"].isin(["fixes", "helps"])]
        return None if good.empty else str(good.iloc[0]["candidate"])

    def verdict(self, name: str) -> str:
        """The verdict for candidate ``name``."""
        row = self.table[self.table["candidate"] == name]
        if row.empty:
            raise KeyError(f"no candidate {name!r} in the table")
        return str(row.iloc[0]["verdict"])

    def model(self, name: str) -> nn.Module:
        """A fresh copy of candidate ``name``'s changed model, untrained."""
        if name not in self.models:
            raise KeyError(f"no model for {name!r} (tried: {', '.join(self.models)})")
        return copy.deepcopy(self.models[name])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``table`` (rows), ``skipped``, ``best`` and the settings."""
        return jsonable({
            "budget_steps": self.budget_steps, "lr": self.lr, "optimizer": self.optimizer,
            "seed": self.seed, "best": self.best,
            "table": self.table.to_dict(orient="records"),
            "skipped": [{"candidate": n, "reason": r} for n, r in self.skipped],
        })

    def _display(self) -> pd.DataFrame:
        t = self.table
        return pd.DataFrame({
            "rank": t["rank"],
            "candidate": t["candidate"],
            "grad first/last before": t["log10_change_before"].map(fmt10),
            "after": t["log10_change_after"].map(fmt10),
            "findings after": t["findings_after"].map(lambda v: ", ".join(v) or "-"),
            "loss": t["final_loss"].map(_num),
            "train acc": t["train_accuracy"].map(_pct),
            "test acc": t["test_accuracy"].map(_pct),
            "stalled": t["stalled"].map(lambda v: "-" if v is None else ("yes" if v else "no")),
            "verdict": t["verdict"],
        })

    def __str__(self) -> str:
        buf = io.StringIO()
        buf.write(f"gradprobe repair: {len(self.table)} runs of {self.budget_steps} steps "
                  f"({self.optimizer}, lr {self.lr:g}, seed {self.seed}); loss and accuracy on "
                  "the training set after the budget\n")
        buf.write(self._display().to_string(index=False))
        buf.write("\n")
        for name, reason in self.skipped:
            buf.write(f"not tried: {name}: {reason}\n")
        best = self.best
        buf.write(f"best: {best}\n" if best else "no candidate beat the baseline\n")
        return buf.getvalue()

    def to_markdown(self) -> str:
        """The table and the skipped candidates as Markdown."""
        d = self._display()
        lines = ["| " + " | ".join(d.columns) + " |", "|" + " --- |" * len(d.columns)]
        for _, row in d.iterrows():
            lines.append("| " + " | ".join(str(v) for v in row) + " |")
        for name, reason in self.skipped:
            lines.append(f"\n- not tried: **{name}**: {reason}")
        best = f"\nBest: **{self.best}**" if self.best else "\nNo candidate beat the baseline."
        lines.append(best)
        return "\n".join(lines)


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "nan" if v is not None else "-"
    return f"{v:.3g}"


def _pct(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.0%}"


def _has_problem(run: TrainingRun, ev: Evidence, th: Thresholds) -> bool:
    judged = run.steps >= th.min_training_steps
    return (run.status == "diverged" or bool(gradient_findings(ev, th) + time_findings(ev, th))
            or (judged and (bool(run.stalled)
                            or run.final_loss > th.underfit_loss_fraction * run.initial_loss)))


def _verdict(run: TrainingRun, base: TrainingRun, base_problem: bool, th: Thresholds) -> str:
    if run.status == "diverged" or not math.isfinite(run.final_loss):
        return "diverged"
    start = min(run.initial_loss, base.initial_loss)  # a bad start must not make it look good
    trains = run.final_loss <= th.underfit_loss_fraction * start and not run.stalled
    if base.status == "diverged" or not math.isfinite(base.final_loss):
        return "fixes" if trains else "helps"
    better = run.final_loss <= (1 - th.repair_margin) * base.final_loss
    if better and trains and base_problem:
        return "fixes"
    if better:
        return "helps"
    if run.final_loss > (1 + th.repair_margin) * base.final_loss:
        return "worse"
    return "no better"


def repair(
    model: nn.Module,
    data: Any,
    loss_fn: LossFn | None = None,
    budget_steps: int = 200,
    *,
    lr: float = DEFAULT_LR,
    optimizer: str = DEFAULT_OPTIMIZER,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    candidates: Sequence[str | Candidate] | None = None,
    thresholds: Thresholds | None = None,
    progress: bool = False,
    ensemble: bool = True,
    threads: int | None = None,
) -> RepairResult:
    """Try candidate fixes on copies of ``model``; train each for ``budget_steps``; rank.

    ``candidates``: names from :data:`CANDIDATES` or your own :class:`Candidate` objects
    (default: all; the baseline always runs). The original model is never modified. A
    candidate that cannot be applied, or breaks, is listed in ``skipped`` with the reason.
    ``progress``: a bar over all candidates' steps with the time left (stderr, a terminal).
    ``ensemble``: candidates whose changed models share their shapes train as one ensemble
    (:mod:`gradprobe.diagnosis.repair_runs`; each run equals its run alone within float
    rounding); False trains them one by one. ``threads``: torch threads while repairing;
    None chooses them from the model size (:mod:`gradprobe.threads`).

    Example:
        >>> fixes = repair(model, "digits", budget_steps=200,
        ...                candidates=["batchnorm", "residual"])     # doctest: +SKIP
        >>> fixes.verdict("batchnorm"), fixes.best                   # doctest: +SKIP
        ('fixes', 'batchnorm')
    """
    if not isinstance(model, nn.Module):
        raise UserError(f"repair needs a torch.nn.Module, got {type(model).__name__}")
    if isinstance(budget_steps, bool) or not isinstance(budget_steps, int) or budget_steps < 1:
        raise UserError(f"budget_steps must be an integer >= 1, got {budget_steps!r}")
    check_threads(threads)
    th = thresholds or DEFAULT_THRESHOLDS
    chosen = _choose(candidates, has_recurrent(model))
    problem = prepare(model, data, loss_fn)
    n_params = parameter_count(model) * (min(len(chosen), MAX_MEMBERS) if ensemble else 1)
    with thread_policy(threads, n_params), \
            ProgressBar(progress, "repair", len(chosen) * budget_steps) as bar:
        built, skipped = _build_all(chosen, model, problem, batch_size, seed, th, bar)
        bar.advance(len(skipped) * budget_steps)
        jobs = [Job(c.name, changed, lr * c.lr_factor, c.callbacks(problem) if c.callbacks
                    else ()) for c, changed, _, _ in built]
        trained = train_candidates(jobs, problem, steps=budget_steps, optimizer=optimizer,
                                   batch_size=batch_size, seed=seed, thresholds=th,
                                   ensemble=ensemble, bar=bar,
                                   describe=lambda text: f"repair: {escape(text)}")
    base_ev = built[0][3]
    rows: list[dict[str, Any]] = []
    models: dict[str, nn.Module] = {}
    runs: dict[str, TrainingRun] = {}
    for cand, changed, what, ev in built:
        run = trained[cand.name]
        if isinstance(run, Exception):  # a candidate (possibly the user's own) broke: say so
            if cand.kind == "baseline":
                raise run
            skipped.append((cand.name, f"failed: {type(run).__name__}: {run}"))
            continue
        remaining = [f.kind for f in gradient_findings(ev, th) + time_findings(ev, th)
                     + dead_findings(ev, th)]
        models[cand.name], runs[cand.name] = changed, run
        rows.append({
            "candidate": cand.name, "kind": cand.kind,
            "change": what + (f"; lr {lr * cand.lr_factor:g}" if cand.lr_factor != 1 else ""),
            "log10_change_before": base_ev.profile.log10_change,
            "log10_change_after": ev.profile.log10_change,
            "findings_after": remaining,
            "final_loss": run.final_loss, "initial_loss": run.initial_loss,
            "train_accuracy": run.final_train_accuracy,
            "test_accuracy": run.final_test_accuracy,
            "stalled": run.stalled, "status": run.status,
        })
    base = runs["baseline"]
    base_problem = _has_problem(base, base_ev, th)
    for row in rows:
        row["verdict"] = ("baseline" if row["candidate"] == "baseline" else
                          _verdict(runs[row["candidate"]], base, base_problem, th))
    table = pd.DataFrame(rows)
    table["_key"] = [
        (1 if r["verdict"] == "diverged" else 0,
         r["final_loss"] if math.isfinite(r["final_loss"]) else math.inf)
        for r in rows
    ]
    table = table.sort_values("_key", kind="stable").drop(columns="_key").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return RepairResult(table=table, skipped=skipped, budget_steps=budget_steps, lr=lr,
                        optimizer=optimizer, seed=seed, models=models, runs=runs)



Built = tuple[Candidate, nn.Module, str, Evidence]


def _build_all(chosen: list[Candidate], model: nn.Module, problem: Problem, batch_size: int,
               seed: int, th: Thresholds, bar: ProgressBar
               ) -> tuple[list[Built], list[tuple[str, str]]]:
    """Every candidate's changed copy, what changed and its evidence at initialisation
    (the baseline first); the candidates that could not be applied or broke, with why."""
    base_ev = collect_evidence(model, problem, n_batches=REPAIR_EVIDENCE_BATCHES,
                               batch_size=batch_size, seed=seed)
    ctx = RepairContext(x=problem.x[: min(8, problem.n)], seed=seed, evidence=base_ev,
                        thresholds=th)
    original = clone(model)
    built: list[Built] = []
    skipped: list[tuple[str, str]] = []
    for cand in chosen:
        bar.describe(f"repair: building {escape(cand.name)}")
        try:
            changed, what = cand.build(original, ctx)
            ev = base_ev if cand.kind in ("baseline", "lr", "clip") else collect_evidence(
                changed, problem, n_batches=REPAIR_EVIDENCE_BATCHES, batch_size=batch_size,
                seed=seed, theory=False)
        except CannotApply as exc:
            skipped.append((cand.name, str(exc)))
        except Exception as exc:  # a candidate (possibly the user's own) broke: say so
            if cand.kind == "baseline":
                raise
            skipped.append((cand.name, f"failed: {type(exc).__name__}: {exc}"))
        else:
            built.append((cand, changed, what, ev))
    return built, skipped


def _choose(candidates: Sequence[str | Candidate] | None,
            recurrent: bool = False) -> list[Candidate]:
    if candidates is None:
        return list(CANDIDATES) + (list(RNN_CANDIDATES) if recurrent else [])
    by_name = {c.name: c for c in CANDIDATES + RNN_CANDIDATES}
    out = [by_name["baseline"]]
    for c in candidates:
        if isinstance(c, Candidate):
            cand = c
        elif c in by_name:
            cand = by_name[c]
        else:
            raise UserError(f"unknown repair candidate {c!r} (allowed: {', '.join(by_name)})")
        if cand.name not in {o.name for o in out}:
            out.append(cand)
    return out
