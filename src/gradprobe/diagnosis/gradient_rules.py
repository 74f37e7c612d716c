"""Rules on the backward signal across depth: ``vanishing_gradient``,
``exploding_gradient`` and ``poor_init_scale``, with their causes in numbers.

Vanishing and exploding are judged on the backward signal across depth (the fitted total
change, median over batches), then explained by the chain-rule factors the probe measures:
per layer, the signal is multiplied by the weight factor (transposed weights) and the
between-layer factor (activation derivative, normalisation, skip paths). The activation's
share is estimated as sqrt(E[phi'^2]); what the between factor holds beyond it is
normalisation or skip connections. Theory adds chi1 and the critical weight scale where it
applies.

Example:
    >>> from gradprobe.diagnosis.evidence import collect_evidence      # doctest: +SKIP
    >>> gradient_findings(collect_evidence(model, problem))           # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradprobe.diagnosis.evidence import ActivationRow, Evidence
from gradprobe.diagnosis.findings import DEFAULT_THRESHOLDS, Finding, Thresholds
from gradprobe.diagnosis.wording import VERIFY, fit_words, fmt10, fmt_g, log10_or_inf


def decompose(ev: Evidence) -> dict[str, Any]:
    """Sum over depth of log10 of each chain-rule factor (None where one is unmeasured).

    ``weights``: weight factors of layers 2..L; ``between``: between factors of layers
    1..L-1; ``activation``: 0.5 * log10 E[phi'^2] of the activation modules at depths
    1..L-1 (None when the model has none: functional activations sit inside ``between``);
    ``other``: ``between - activation`` (normalisation, skip paths).
    """
    rows = sorted(ev.layers, key=lambda r: r.depth)
    n = len(rows)
    out: dict[str, Any] = {"weights": None, "between": None, "activation": None, "other": None}
    if n < 2:
        return out
    w = [log10_or_inf(r.weight_factor) for r in rows[1:]]
    b = [log10_or_inf(r.between_factor) for r in rows[:-1]]
    if all(v is not None for v in w):
        out["weights"] = float(sum(w))  # type: ignore[arg-type]
    if all(v is not None for v in b):
        out["between"] = float(sum(b))  # type: ignore[arg-type]
    acts = [a for a in ev.activations if 1 <= a.depth < rows[-1].depth]
    if acts:
        out["activation"] = float(sum(
            0.5 * math.log10(a.mean_sq_derivative) if a.mean_sq_derivative > 0 else -math.inf
            for a in acts
        ))
        if out["between"] is not None and math.isfinite(out["activation"]):
            out["other"] = out["between"] - out["activation"]
    return out


def _gm(total: float | None, n: int) -> float | None:
    """Geometric mean per layer of a log10 sum over ``n`` transitions."""
    if total is None or n < 1:
        return None
    return 10 ** (total / n) if math.isfinite(total) else 0.0


def _activation_kinds(ev: Evidence) -> list[ActivationRow]:
    seen: dict[str, ActivationRow] = {}
    for a in ev.activations:
        seen.setdefault(a.activation, a)
    return list(seen.values())


def _init_name(crit: float, th: Thresholds) -> str:
    if math.isclose(crit, 2.0, rel_tol=th.init_name_tolerance):
        return "he_normal"
    if math.isclose(crit, 1.0, rel_tol=th.init_name_tolerance):
        return "lecun_normal"
    return f"normal(sigma_w2={crit:.3g})"


def _needed_sigma_w2(ev: Evidence) -> float | None:
    """sigma_w2 that would make the measured per-layer factor 1 (plain stacks)."""
    rate = ev.profile.per_layer
    if ev.has_norm or not math.isfinite(rate) or rate <= 0:
        return None
    return _median_sigma_w2(ev) / rate**2


def _median_sigma_w2(ev: Evidence) -> float:
    return float(np.median([r.sigma_w2 for r in ev.layers]))


def init_off(ev: Evidence, th: Thresholds) -> str | None:
    """``"low"`` / ``"high"`` when theory's practical critical sigma_w2 says the scale is off."""
    t = ev.theory
    if not t.structural or t.critical_sigma_w2 is None or t.sigma_w2 is None:
        return None
    if t.critical_saturation is None or t.critical_saturation >= th.critical_saturation_limit:
        return None
    ratio = t.sigma_w2 / t.critical_sigma_w2
    if ratio < 1 / th.init_scale_tolerance:
        return "low"
    if ratio > th.init_scale_tolerance:
        return "high"
    return None


# ------------------------------------------------------------------------- gradient


def _other_label(ev: Evidence) -> str:
    if ev.has_norm:
        return "normalisation"
    if any(w in ev.theory.reason for w in ("residual", "branching")):
        return "skip connections"
    return "between-layer modules"


def _responsible(ev: Evidence, direction: str, th: Thresholds, parts: dict[str, Any]) -> list[str]:
    sign = -1.0 if direction == "vanishing" else 1.0
    labels: list[str] = []
    dead = [a for a in ev.activations if a.dead_unit_fraction >= th.dead_unit_warning]
    if ev.profile.zero_layers or (dead and direction == "vanishing"):
        labels.append("dead units")
    off = init_off(ev, th)
    if (off == "low" and direction == "vanishing") or (off == "high" and direction == "exploding"):
        labels.append("weight scale")
    total = ev.profile.log10_first_last
    if math.isfinite(total) and total != 0:
        act = parts["activation"] if parts["activation"] is not None else (
            parts["between"] if not ev.activations else None)
        contrib = [("weight scale", parts["weights"]), ("activation derivative", act),
                   (_other_label(ev), parts["other"])]
        for label, value in sorted(contrib, key=lambda kv: -(sign * (kv[1] or 0.0))):
            if value is not None and math.isfinite(value) and sign * value >= th.cause_share * abs(
                total
            ) and label not in labels:
                labels.append(label)
    rate = ev.profile.log10_change / max(ev.profile.n_layers - 1, 1)
    if not labels or (math.isfinite(rate) and abs(rate) <= th.depth_only_rate):
        labels.append("depth")
    return labels


def _activation_text(ev: Evidence, gm_act: float | None) -> str:
    kinds = _activation_kinds(ev)
    if not kinds:
        return ""
    if len(kinds) == 1:
        a = kinds[0]
        bound = f"; phi' <= {a.max_dphi:g}" if a.max_dphi is not None else ""
        return f"{a.activation} derivative x{fmt_g(gm_act)} (sqrt E[phi'^2]{bound})"
    names = "/".join(a.activation for a in kinds)
    return f"activation derivatives ({names}) x{fmt_g(gm_act)} (sqrt E[phi'^2])"


def _theory_text(ev: Evidence) -> str:
    t = ev.theory
    crit = (f"; critical sigma_w2 = {fmt_g(t.critical_sigma_w2, 3)}"
            if t.critical_sigma_w2 is not None else "")
    if t.applies and t.predicted_log10_change is not None:
        return (f" Theory ({t.activation}, sigma_w2 = {fmt_g(t.sigma_w2, 3)}): chi1 = "
                f"{fmt_g(t.chi1, 3)} ({t.phase}), predicts {fmt10(t.predicted_log10_change)}, "
                f"measured {fmt10(ev.profile.log10_change)}{crit}.")
    if t.structural:
        return (f" Mean field ({t.activation}, sigma_w2 = {fmt_g(t.sigma_w2, 3)}): chi1 = "
                f"{fmt_g(t.chi1, 3)} per layer in squared norm ({t.phase}){crit}; no prediction "
                f"for this network: {t.reason}.")
    return f" Theory does not apply: {t.reason}."


def _cause_text(ev: Evidence, labels: list[str], parts: dict[str, Any], th: Thresholds) -> str:
    p = ev.profile
    n = p.n_layers
    finite = [c for c in p.batches if math.isfinite(c)]
    spread = ""
    if len(finite) > 1 and fmt10(min(finite)) != fmt10(max(finite)):
        spread = f", range {fmt10(min(finite))} to {fmt10(max(finite))}"
    if p.zero_layers:
        shown = ", ".join(p.zero_layers[:3]) + (", ..." if len(p.zero_layers) > 3 else "")
        text = (f"The backward signal is exactly 0 at {len(p.zero_layers)} of {n} weight layers "
                f"({shown}) on every batch: no gradient reaches them.")
    else:
        text = (f"The backward signal at the first weight layer is {fmt10(p.log10_first_last)} "
                f"of the last, measured ({n} weight layers, median of {len(p.batches)} "
                f"batches); {fit_words(p, spread)}.")
    steps = n - 1
    gm_w, gm_b = _gm(parts["weights"], steps), _gm(parts["between"], steps)
    gm_a, gm_o = _gm(parts["activation"], steps), _gm(parts["other"], steps)
    pieces = []
    if gm_b is not None:
        between = f"between-layer factor x{fmt_g(gm_b)}"
        act = _activation_text(ev, gm_a)
        if act:
            between += f", of which the {act}"
            if gm_o is not None and gm_o > 0 and abs(math.log10(gm_o)) >= th.minor_factor_log10:
                between += f" and {_other_label(ev)} x{fmt_g(gm_o)}"
        elif not ev.activations:
            between += (" (no activation modules: a functional activation inside forward is "
                        "measured as part of this factor)")
        pieces.append(between)
    if gm_w is not None:
        pieces.append(f"weight factor x{fmt_g(gm_w)} (sigma_w2 = {fmt_g(_median_sigma_w2(ev), 3)})")
    if pieces:
        text += " Per layer: " + "; ".join(pieces) + "."
    text += _theory_text(ev)
    text += f" Responsible: {', '.join(labels)}."
    return text


def _recommendation(ev: Evidence, direction: str, labels: list[str], th: Thresholds) -> str:
    t = ev.theory
    first = labels[0]
    kinds = _activation_kinds(ev)
    act = kinds[0].activation if len(kinds) == 1 else "the activation"
    if first == "dead units":
        rec = ("Zero the biases and re-initialise with he_normal, or use LeakyReLU so "
               "negative inputs keep a gradient.")
    elif first == "weight scale":
        if t.structural and t.critical_sigma_w2 is not None:
            crit = t.critical_sigma_w2
            rec = (f"Re-initialise the weights with sigma_w2 = {crit:.3g} "
                   f"({_init_name(crit, th)}), the critical value for {t.activation}.")
        else:
            rec = ("Rescale the initial weights so the weight factor per layer is near 1 "
                   f"({'smaller' if direction == 'exploding' else 'larger'} sigma_w2).")
    elif first == "activation derivative":
        bounded = len(kinds) == 1 and kinds[0].max_dphi is not None
        needed = _needed_sigma_w2(ev)
        if direction == "vanishing" and (bounded or not kinds):
            rec = (f"Replace {act} by relu with he_normal init (or selu with lecun_normal); "
                   "or insert BatchNorm after the weight layers, or add residual connections.")
        elif needed is not None:
            rec = (f"Scale the weights to make up for {act}: sigma_w2 ~ {needed:.3g} (the "
                   "present value over the measured per-layer factor squared).")
        else:
            rec = f"Change the weight scale feeding {act}, or insert normalisation."
    elif first == "normalisation":
        rec = ("Plain deep stacks of normalisation layers change the backward signal by a "
               "fixed factor per layer (batch norm: Yang et al. 2019); add residual "
               "connections or use fewer layers.")
    elif first == "skip connections":
        rec = ("The residual branches add to the signal at every block: scale them down (e.g. "
               "initialise each branch's last layer near zero) or normalise inside them.")
    else:
        rec = ("Each layer is close to 1 but the depth compounds it: add residual connections "
               "or normalisation, or use fewer layers.")
    return f"{rec} {VERIFY}"


def _layer_table(ev: Evidence) -> list[dict[str, Any]]:
    acts = {a.depth: a for a in ev.activations}
    out = []
    for r in sorted(ev.layers, key=lambda r: r.depth):
        a = acts.get(r.depth)
        out.append({
            "layer": r.name, "depth": r.depth, "backward_signal": r.backward_signal,
            "weight_factor": r.weight_factor, "between_factor": r.between_factor,
            "sigma_w2": r.sigma_w2,
            "activation": a.name if a else None,
            "activation_factor": math.sqrt(a.mean_sq_derivative) if a else None,
        })
    return out


def gradient_findings(ev: Evidence, th: Thresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
    """``vanishing_gradient`` / ``exploding_gradient`` from the profile across depth."""
    p = ev.profile
    if p.n_layers < 2 or p.nonfinite:
        return []
    change = p.log10_change
    if p.zero_layers:
        change = -math.inf
    if math.isnan(change):
        return []
    if change <= math.log10(th.vanishing_warning):
        kind, direction = "vanishing_gradient", "vanishing"
        severity = "error" if change <= math.log10(th.vanishing_error) else "warning"
        limit = math.log10(th.vanishing_warning)
    elif change >= math.log10(th.exploding_warning):
        kind, direction = "exploding_gradient", "exploding"
        severity = "error" if change >= math.log10(th.exploding_error) else "warning"
        limit = math.log10(th.exploding_warning)
    else:
        return []
    rows = sorted(ev.layers, key=lambda r: r.depth)
    last = rows[-1].backward_signal
    affected = []
    for r in rows:
        rel = log10_or_inf(r.backward_signal / last) if last > 0 else None
        if rel is not None and ((direction == "vanishing" and rel <= limit) or
                                (direction == "exploding" and rel >= limit)):
            affected.append(r.name)
    if not affected:
        affected = [rows[0].name]
    parts = decompose(ev)
    labels = _responsible(ev, direction, th, parts)
    t = ev.theory
    evidence = {
        "attenuation": 10 ** change if math.isfinite(change) else 0.0,
        "log10_change": change,
        "log10_change_batches": list(p.batches),
        "log10_first_last": p.log10_first_last,
        "per_layer_factor": p.per_layer,
        "fit_r2": p.fit_r2,
        "n_layers": p.n_layers,
        "n_batches": len(p.batches),
        "log10_factors": parts,
        "responsible": labels,
        "predicted_log10_change": t.predicted_log10_change if t.applies else None,
        "theory": {"applies": t.applies, "reason": t.reason, "activation": t.activation,
                   "sigma_w2": t.sigma_w2, "chi1": t.chi1, "phase": t.phase,
                   "critical_sigma_w2": t.critical_sigma_w2} if t.applies else
                  {"applies": False, "reason": t.reason},
        "zero_layers": list(p.zero_layers),
        "layers": _layer_table(ev),
    }
    return [Finding(kind, severity, affected, evidence, _cause_text(ev, labels, parts, th),
                    _recommendation(ev, direction, labels, th))]


# ------------------------------------------------------------------------- init scale


def init_findings(ev: Evidence, gradient: list[Finding],
                  th: Thresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
    """``poor_init_scale``: a gradient finding stands and theory's critical scale is far off."""
    if not gradient:
        return []
    g = gradient[0]
    off = init_off(ev, th)
    direction = "vanishing" if g.kind == "vanishing_gradient" else "exploding"
    if not ((off == "low" and direction == "vanishing") or
            (off == "high" and direction == "exploding")):
        return []
    t = ev.theory
    crit = t.critical_sigma_w2
    assert crit is not None and t.sigma_w2 is not None
    tol = th.init_scale_tolerance
    layers = [r.name for r in ev.layers if r.sigma_w2 / crit < 1 / tol or r.sigma_w2 / crit > tol]
    evidence = {
        "sigma_w2": t.sigma_w2,
        "sigma_w2_per_layer": {r.name: r.sigma_w2 for r in ev.layers},
        "critical_sigma_w2": crit,
        "ratio_to_critical": t.sigma_w2 / crit,
        "chi1": t.chi1,
        "phase": t.phase,
        "activation": t.activation,
        "predicted_log10_change": t.predicted_log10_change,
        "measured_log10_change": ev.profile.log10_change,
        "critical_saturation": t.critical_saturation,
    }
    measured = ev.profile.per_layer
    cause = (
        f"Weights have sigma_w2 = {t.sigma_w2:.3g} (E[W^2] x fan_in, mean over hidden layers) "
        f"for {t.activation}: mean-field chi1 = sigma_w2 E[phi'^2] = {t.chi1:.3g} ({t.phase} "
        f"phase), a factor sqrt(chi1) = {math.sqrt(t.chi1):.3g} per layer on the backward "
        f"signal; measured x{measured:.3g} per layer, {fmt10(ev.profile.log10_change)} over "
        f"{ev.profile.n_layers} layers"
    )
    if t.predicted_log10_change is not None:
        cause += f" (theory predicts {fmt10(t.predicted_log10_change)})"
    cause += (f". The critical value, where chi1 = 1, is sigma_w2 = {crit:.3g} "
              f"({t.sigma_w2 / crit:.2g}x the present one).")
    rec = (f"Re-initialise with sigma_w2 = {crit:.3g} ({_init_name(crit, th)}) and zero biases. "
           f"{VERIFY}")
    return [Finding("poor_init_scale", g.severity, layers or [r.name for r in ev.layers],
                    evidence, cause, rec)]
