"""Rules through time: ``vanishing_gradient`` / ``exploding_gradient`` along a recurrent
layer's hidden states, with the axis ``"time"`` in the evidence and the cause.

Judged per recurrent layer on the backward signal w.r.t. the hidden state at the first
processed step over the last (median over the evidence batches, :mod:`time_evidence`),
against ``time_vanishing_*`` / ``time_exploding_*`` in :class:`Thresholds`. The cause gives
the per-step factor, the gradient horizon, the recurrent spectral radius and, for vanilla
RNNs with Gaussian recurrent weights, the mean-field per-step factor beside the measurement.

Example:
    >>> from gradprobe.diagnosis.evidence import collect_evidence      # doctest: +SKIP
    >>> time_findings(collect_evidence(rnn_model, problem))           # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import asdict

from gradprobe.diagnosis.evidence import Evidence
from gradprobe.diagnosis.findings import DEFAULT_THRESHOLDS, Finding, Thresholds
from gradprobe.diagnosis.time_evidence import TimeRow
from gradprobe.diagnosis.wording import VERIFY, fmt10, fmt_g


def _direction(r: TimeRow, th: Thresholds) -> tuple[str, str] | None:
    c = r.log10_first_last
    if math.isnan(c):
        return None
    if c <= math.log10(th.time_vanishing_warning):
        return "vanishing", "error" if c <= math.log10(th.time_vanishing_error) else "warning"
    if c >= math.log10(th.time_exploding_warning):
        return "exploding", "error" if c >= math.log10(th.time_exploding_error) else "warning"
    return None


def _row_text(r: TimeRow) -> str:
    horizon = ("never within the sequence" if r.horizon == math.inf
               else f"{fmt_g(r.horizon, 3)} steps")
    text = (f"{r.layer} ({r.type}, {r.steps} steps): first step {fmt10(r.log10_first_last)} of "
            f"the last, x{fmt_g(r.per_step, 3)} per step, gradient horizon {horizon}")
    if r.spectral_radius is not None:
        text += f", recurrent spectral radius {fmt_g(r.spectral_radius, 3)}"
    if r.theory_factor is not None:
        text += (f"; theory x{fmt_g(r.theory_factor, 3)} per step (mean field, "
                 f"{r.theory_reason}, chi = {fmt_g(r.theory_chi, 3)})")
    return text


def _recommendation(direction: str, rows: list[TimeRow]) -> str:
    types = {r.type for r in rows}
    if direction == "exploding":
        rec = ("Clip the gradient norm (torch.nn.utils.clip_grad_norm_(model.parameters(), "
               "1.0) before each optimizer step) and bring the recurrent weights' spectral "
               "radius to 1 or below (orthogonal init).")
    elif types & {"RNN", "RNNCell"}:
        rec = ("Replace the vanilla RNN by an LSTM (forget-gate bias 1) or a GRU, or "
               "initialise its recurrent weights orthogonal (tanh) or as the identity with "
               "ReLU (IRNN, Le et al. 2015).")
    elif types & {"LSTM", "LSTMCell"}:
        rec = ("Set the LSTM's forget-gate bias to 1 (Jozefowicz et al. 2015) so the cell "
               "state carries the signal; if it is 1 already, shorten the sequences the "
               "gradient has to cross or add attention/skip connections through time.")
    else:
        rec = ("Bias the gates toward keeping the state (GRU: update-gate bias > 0), shorten "
               "the sequences the gradient has to cross or add skip connections through time.")
    return f"{rec} {VERIFY}"


def time_findings(ev: Evidence, th: Thresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
    """One ``vanishing_gradient`` / ``exploding_gradient`` finding per direction through time."""
    hits: dict[str, list[tuple[TimeRow, str]]] = {}
    for r in ev.time:
        d = _direction(r, th)
        if d is not None:
            hits.setdefault(d[0], []).append((r, d[1]))
    out = []
    for direction, found in hits.items():
        rows = [r for r, _ in found]
        severity = "error" if any(s == "error" for _, s in found) else "warning"
        worst = min(rows, key=lambda r: r.log10_first_last) if direction == "vanishing" else \
            max(rows, key=lambda r: r.log10_first_last)
        cause = (f"Through time: the backward signal w.r.t. the hidden state is "
                 f"{'shrinking' if direction == 'vanishing' else 'growing'} from the last step "
                 f"back to the first (median of {ev.n_batches} batches). "
                 + "; ".join(_row_text(r) for r in rows) + ".")
        evidence = {
            "axis": "time",
            "log10_change": worst.log10_first_last,
            "per_step_factor": worst.per_step,
            "gradient_horizon": worst.horizon,
            "time_steps": worst.steps,
            "spectral_radius": worst.spectral_radius,
            "theory_per_step_factor": worst.theory_factor,
            "responsible": ["time"],
            "recurrent_layers": [asdict(r) for r in rows],
        }
        kind = "vanishing_gradient" if direction == "vanishing" else "exploding_gradient"
        out.append(Finding(kind, severity, [r.layer for r in rows], evidence, cause,
                           _recommendation(direction, rows)))
    return out
