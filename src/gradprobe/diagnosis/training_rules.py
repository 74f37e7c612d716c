"""Rules on the training run: ``divergence``, ``training_stall``, ``underfitting``.

Example:
    >>> ev.training = train_run(model, problem, steps=200, lr=0.1)     # doctest: +SKIP
    >>> training_findings(ev, gradient_findings(ev))                  # doctest: +SKIP
"""

from __future__ import annotations

from gradprobe.diagnosis.evidence import Evidence
from gradprobe.diagnosis.findings import DEFAULT_THRESHOLDS, Finding, Thresholds
from gradprobe.diagnosis.wording import VERIFY, fmt10
from gradprobe.record import smooth_loss


def training_findings(ev: Evidence, gradient: list[Finding],
                      th: Thresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
    """``divergence``, ``training_stall`` or ``underfitting`` from the short training run."""
    tr = ev.training
    if tr is None:
        return []
    base = {"steps": tr.steps, "lr": tr.lr, "optimizer": tr.optimizer,
            "initial_loss": tr.initial_loss, "final_loss": tr.final_loss,
            "final_train_accuracy": tr.final_train_accuracy}
    link = ""
    if gradient:
        g = gradient[0]
        link = (f" The gradient finding explains it: the first weight layer gets "
                f"{fmt10(g.evidence['log10_change'])} of the last layer's backward signal.")
    if tr.status == "diverged":
        cause = (f"The loss became NaN/Inf at step {tr.diverged_at_step} ({tr.optimizer}, lr "
                 f"{tr.lr:g}).{link}")
        rec = ("Lower the learning rate (x0.1), clip gradients, or fix the exploding gradient; "
               f"{VERIFY}")
        return [Finding("divergence", "error", [], {**base, "diverged_at_step":
                                                    tr.diverged_at_step}, cause, rec)]
    if (tr.max_smoothed_loss is not None and tr.first_loss is not None
            and tr.max_smoothed_loss > th.divergence_loss_factor * tr.first_loss):
        cause = (f"The smoothed loss rose to {tr.max_smoothed_loss:.3g}, "
                 f"{tr.max_smoothed_loss / tr.first_loss:.1f}x its first value "
                 f"({tr.optimizer}, lr {tr.lr:g}).{link}")
        return [Finding("divergence", "warning", [], {**base, "max_smoothed_loss":
                                                      tr.max_smoothed_loss}, cause,
                        f"Lower the learning rate (x0.1) or clip gradients. {VERIFY}")]
    if tr.steps < th.min_training_steps:
        return []
    if tr.stalled:
        half = max(int(tr.steps * th.stall_window_fraction), 1)
        smooth = smooth_loss(tr.losses).tolist()
        before, after = min(smooth[:-half]), smooth[-1]
        cause = (f"Over the last {half} of {tr.steps} steps the smoothed loss went "
                 f"{before:.4g} -> {after:.4g} (less than {th.stall_improvement:.0%} better) "
                 f"while above {tr.loss_threshold:.4g}, half its first value; the whole-set "
                 f"loss went {tr.initial_loss:.4g} -> {tr.final_loss:.4g}.{link}")
        rec = ("Fix the gradient flow first (see the other findings); a larger learning rate "
               f"alone rarely moves a stalled deep net. {VERIFY}")
        return [Finding("training_stall", "error", [], {**base, "smoothed_before": before,
                                                        "smoothed_after": after}, cause, rec)]
    if tr.final_loss > th.underfit_loss_fraction * tr.initial_loss:
        acc = tr.final_train_accuracy
        cause = (f"After {tr.steps} steps the training loss is {tr.final_loss:.3g}, "
                 f"{tr.final_loss / tr.initial_loss:.0%} of its initial {tr.initial_loss:.3g} "
                 f"(above {th.underfit_loss_fraction:.0%})"
                 + (f"; training accuracy {acc:.0%}" if acc is not None else "")
                 + f": it learns, too slowly for the budget.{link}")
        rec = (f"Train longer or raise the learning rate (now {tr.lr:g}); if a gradient finding "
               f"stands, fix it first. {VERIFY}")
        return [Finding("underfitting", "warning", [], base, cause, rec)]
    return []


def nonfinite_findings(ev: Evidence) -> list[Finding]:
    """``divergence`` when the model as given already yields NaN/Inf."""
    if not ev.profile.nonfinite:
        return []
    return [Finding(
        "divergence", "error", [], {"log10_change_batches": list(ev.profile.batches)},
        "The loss or the backward signal is NaN/Inf on the evidence batches, for the model as "
        "given (before any training).",
        "Check the weights (a diverged checkpoint?) and the inputs for NaN/Inf; re-initialise.",
    )]
