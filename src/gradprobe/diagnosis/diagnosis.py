"""``gp.diagnose``: what is wrong with a model's gradient flow, where, why, and what to change.

Example:
    >>> import torch, gradprobe as gp
    >>> from torch import nn
    >>> layers = []
    >>> for _ in range(20):
    ...     layers += [nn.Linear(32, 32), nn.Sigmoid()]
    >>> model = nn.Sequential(*layers, nn.Linear(32, 3))
    >>> x, y = torch.randn(256, 32), torch.randint(0, 3, (256,))
    >>> diag = gp.diagnose(model, data=(x, y))
    >>> diag.healthy, diag.kinds()[0]
    (False, 'vanishing_gradient')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from gradprobe.diagnosis.evidence import BATCH_SIZE, N_BATCHES, Evidence, collect_evidence
from gradprobe.diagnosis.findings import DEFAULT_THRESHOLDS, Finding, Thresholds, jsonable
from gradprobe.diagnosis.inputs import LossFn, Problem, check_model_runs, resolve_problem
from gradprobe.diagnosis.rules import apply_rules, dead_findings, saturation_findings
from gradprobe.diagnosis.training import FiniteSnapshots, train_run
from gradprobe.diagnosis.wording import fit_words, fmt10
from gradprobe.errors import UserError
from gradprobe.progress import ProgressBar
from gradprobe.train import Callback, StepProgress

#: Plain SGD at 0.1 is the default for diagnose's training run and for repair. On digits
#: (standardised inputs, cross-entropy, batch 128) it trains a 10-layer He-initialised ReLU
#: MLP to 98% training accuracy in 200 steps and diverges on none of the healthy zoo models,
#: so a stall or divergence at this rate says something about the model, not the step size.
#: Plain 30-layer nets train slowly at it even at critical init (see docs/diagnose.md).
DEFAULT_LR = 0.1
DEFAULT_OPTIMIZER = "sgd"


@dataclass
class Diagnosis:
    """The findings for one model, with the evidence they rest on."""

    findings: list[Finding]
    evidence: Evidence
    model_name: str
    data_name: str
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    notes: list[str] = field(default_factory=list)
    evidence_after: Evidence | None = None  # the trained copy, when steps > 0
    repair: Any = None  # a RepairResult when one was run for the CLI

    @property
    def coverage(self) -> float:
        """Fraction in [0, 1] of the model's trainable parameter elements whose module the
        probe measured (below ``thresholds.min_coverage``: an ``incomplete_coverage``
        finding)."""
        return self.evidence.coverage

    @property
    def unmeasured(self) -> list[str]:
        """Qualified names of the parametrised modules the probe did not measure."""
        return [u["module"] for u in self.evidence.unmeasured]

    @property
    def healthy(self) -> bool:
        """True when no finding is a warning or an error."""
        return not any(f.severity in ("warning", "error") for f in self.findings)

    def kinds(self) -> list[str]:
        """The finding kinds, most severe first."""
        return [f.kind for f in self.findings]

    def by_kind(self, kind: str) -> Finding | None:
        """The finding of ``kind``, or None."""
        return next((f for f in self.findings if f.kind == kind), None)

    def headline(self) -> str:
        """One line: the model, the backward signal's change (measured first/last ratio, then
        the fit across depth with its R^2), and theory's prediction."""
        p = self.evidence.profile
        t = self.evidence.theory
        line = (f"{self.model_name} ({p.n_layers} weight layers) on {self.data_name}: backward "
                f"signal first/last {fmt10(p.log10_first_last)} measured")
        if p.n_layers > 1:
            line += f"; {fit_words(p)}"
        if t.applies and t.predicted_log10_change is not None:
            line += (f"; theory {fmt10(t.predicted_log10_change)} ({t.activation}, chi1 "
                     f"{t.chi1:.3g}, {t.phase})")
        else:
            line += "; theory does not apply"
        for r in self.evidence.time:
            line += (f"; through time {r.layer}: {fmt10(r.log10_first_last)} over {r.steps} "
                     f"steps (x{r.per_step:.3g} per step)")
        return line

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``healthy``, ``findings``, ``summary``, ``evidence``, ``notes``
        (and ``repair`` when one was run)."""
        p = self.evidence.profile
        out: dict[str, Any] = {
            "model": self.model_name,
            "data": self.data_name,
            "healthy": self.healthy,
            "findings": [f.to_dict() for f in self.findings],
            "summary": jsonable({
                "n_layers": p.n_layers,
                "log10_change": p.log10_change,
                "log10_first_last": p.log10_first_last,
                "fit_r2": p.fit_r2,
                "per_layer_factor": p.per_layer,
                "theory_applies": self.evidence.theory.applies,
                "theory_reason": self.evidence.theory.reason,
                "predicted_log10_change": self.evidence.theory.predicted_log10_change,
                "coverage": self.coverage,
                "unmeasured": self.unmeasured,
            }),
            "evidence": self.evidence.to_dict(),
            "evidence_after_training": (
                self.evidence_after.to_dict() if self.evidence_after is not None else None
            ),
            "notes": list(self.notes),
        }
        if self.repair is not None:
            out["repair"] = self.repair.to_dict()
        return out

    def __str__(self) -> str:
        lines = [f"gradprobe diagnosis: {self.headline()}", self._coverage_line()]
        if self.healthy and not self.findings:
            lines.append("healthy: no findings")
        else:
            n = len(self.findings)
            lines.append(f"{'healthy' if self.healthy else 'not healthy'}: {n} finding"
                         f"{'s' if n != 1 else ''}")
        for f in self.findings:
            lines.append(f.headline())
            lines.append(f"  cause: {f.cause}")
            lines.append(f"  fix:   {f.recommendation}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _coverage_line(self) -> str:
        line = f"coverage: {100 * self.coverage:.1f}% of trainable parameters measured"
        if self.unmeasured:
            line += f" (not measured: {', '.join(self.unmeasured)})"
        return line

    def to_markdown(self) -> str:
        """A Markdown report: headline, a findings table, then cause and fix per finding."""
        out = [f"# gradprobe diagnosis: {self.model_name}", "", self.headline(), "",
               self._coverage_line(), ""]
        if not self.findings:
            out += ["**Healthy**: no findings.", ""]
        else:
            out += ["| severity | kind | layers |", "| --- | --- | --- |"]
            for f in self.findings:
                where = ", ".join(f.layers[:3]) + (" ..." if len(f.layers) > 3 else "")
                out.append(f"| {f.severity} | `{f.kind}` | {where or '-'} |")
            out.append("")
            for f in self.findings:
                out += [f"## {f.kind} ({f.severity})", "", f"**Cause.** {f.cause}", "",
                        f"**Fix.** {f.recommendation}", ""]
        if self.repair is not None:
            out += ["## Repair", "", self.repair.to_markdown(), ""]
        if self.notes:
            out += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(out)


def diagnose(
    model: nn.Module,
    data: Any,
    loss_fn: LossFn | None = None,
    steps: int = 0,
    *,
    lr: float = DEFAULT_LR,
    optimizer: str = DEFAULT_OPTIMIZER,
    batch_size: int = BATCH_SIZE,
    n_batches: int = N_BATCHES,
    seed: int = 0,
    thresholds: Thresholds | None = None,
    name: str | None = None,
    progress: bool = False,
    callbacks: Sequence[Callback] = (),
) -> Diagnosis:
    """Diagnose ``model``'s gradient flow on ``data``; ``steps > 0`` adds a short training run.

    The model is never modified: measurements and training run on copies. ``data`` is
    ``(x, y)`` (``x`` may be a dict of tensors passed as keyword arguments; ``y`` class
    labels, per-token labels with -100 ignored, or float targets), a dict of inputs plus
    ``labels``, a dataset name, a DataSpec or a Dataset (see
    :mod:`gradprobe.diagnosis.inputs`). ``lr``/``optimizer`` set the training run (plain
    SGD at :data:`DEFAULT_LR` by default); ``n_batches`` x ``batch_size`` samples are probed;
    ``name`` labels the model in reports; ``progress`` shows a bar with the time left over
    the training steps (stderr, a terminal); ``callbacks`` join the training run
    (:class:`gradprobe.train.Callback`, e.g. one that stops it early with ``loop.stop``).
    Raises :class:`UserError` for bad input.

    Example:
        >>> diag = diagnose(model, data="digits", steps=200)      # doctest: +SKIP
        >>> print(diag)                                          # doctest: +SKIP
    """
    if not isinstance(model, nn.Module):
        raise UserError(f"diagnose needs a torch.nn.Module, got {type(model).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise UserError(f"steps must be an integer >= 0, got {steps!r}")
    th = thresholds or DEFAULT_THRESHOLDS
    problem = prepare(model, data, loss_fn)
    evidence = collect_evidence(model, problem, n_batches=n_batches, batch_size=batch_size,
                                seed=seed)
    after, when = None, ""
    if steps > 0:
        trained = clone(model)
        snapshots = FiniteSnapshots()
        with ProgressBar(progress, "diagnose: training", steps) as bar:
            evidence.training = train_run(
                trained, problem, steps=steps, lr=lr, optimizer=optimizer,
                batch_size=batch_size, seed=seed, thresholds=th,
                callbacks=[snapshots, StepProgress(bar), *callbacks],
            )
        after, when = _evidence_after(trained, problem, evidence.training, snapshots,
                                      n_batches=n_batches, batch_size=batch_size, seed=seed)
    findings = apply_rules(evidence, th)
    if after is not None:
        findings = _merge_after_training(findings, after, when, th)
    notes = list(evidence.notes)
    if not evidence.theory.applies:
        notes.append(f"theory does not apply: {evidence.theory.reason}")
    return Diagnosis(findings=findings, evidence=evidence, model_name=name or type(model).__name__,
                     data_name=problem.name, thresholds=th, notes=notes, evidence_after=after)


def _evidence_after(
    trained: nn.Module, problem: Problem, run: Any, snapshots: FiniteSnapshots, **kw: Any
) -> tuple[Evidence | None, str]:
    """Evidence on the trained copy, and when it was taken.

    After a divergence the weights are NaN: the last kept weights whose loss was finite are
    measured instead (newest first, the first whose evidence is finite), so units that died
    before the divergence are still reported.
    """
    where = f"{run.optimizer}, lr {run.lr:g}"
    if run.status == "complete":
        ev = collect_evidence(trained, problem, theory=False, **kw)
        return ev, f"After {run.steps} training steps ({where})"
    for step, state in reversed(snapshots.states):
        trained.load_state_dict(state)
        ev = collect_evidence(trained, problem, theory=False, **kw)
        if not ev.profile.nonfinite:
            return ev, (f"Before the divergence at step {run.diverged_at_step} ({where}), at "
                        f"step {step}")
    return None, ""


def _merge_after_training(
    findings: list[Finding], after: Evidence, when: str, th: Thresholds
) -> list[Finding]:
    """Add dead units or saturation that the training run produced (not there before)."""
    have = {f.kind for f in findings}
    out = list(findings)
    for f in dead_findings(after, th) + saturation_findings(after, th):
        if f.kind in have:
            continue
        f.cause = f"{when}: {f.cause}"
        f.evidence["when"] = when[0].lower() + when[1:]
        out.append(f)
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(out, key=lambda f: order[f.severity])


def prepare(model: nn.Module, data: Any, loss_fn: LossFn | None) -> Problem:
    """Resolve ``data`` and check the model runs on it (reshaping flat image data if needed)."""
    problem = resolve_problem(data, loss_fn)
    check_model_runs(model, problem)
    return problem


def clone(model: nn.Module) -> nn.Module:
    """A deep copy the caller may train or change; the original is untouched."""
    import copy

    try:
        return copy.deepcopy(model)
    except Exception as exc:  # user modules may hold uncopyable state
        raise UserError(f"cannot copy the model ({type(exc).__name__}: {exc}); diagnose "
                        "works on copies so the original is never modified") from None
