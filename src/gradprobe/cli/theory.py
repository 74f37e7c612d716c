"""``gradprobe theory``: mean-field predictions and phase diagrams from the command line.

Thin commands over :mod:`gradprobe.theory`::

    gradprobe theory --activation tanh --sigma-w2 1.5 --sigma-b2 0.05 [--depth 50] [--json]
    gradprobe theory --activation leaky_relu --param slope=0.2 --sigma-w2 2 --sigma-b2 0
    gradprobe theory phase --activation tanh -o phase.png

Bad input raises :class:`gradprobe.errors.UserError` (one line; exit code 2).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from gradprobe.cli.errors import command_group
from gradprobe.errors import UserError
from gradprobe.limits import MAX_THEORY_DEPTH

theory_app = command_group(
    "theory", "Mean-field predictions: fixed points, chi1, depth scales, phase diagrams.",
    invoke_without_command=True,
)


def parse_params(items: list[str]) -> dict[str, float]:
    """``["slope=0.2"]`` -> ``{"slope": 0.2}``; values must be numbers."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param {item!r} must look like name=value, e.g. slope=0.2")
        try:
            out[key.strip()] = float(raw)
        except ValueError:
            raise UserError(f"--param {item!r}: the value must be a number") from None
    return out


def _range(text: str, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{name} must look like LOW,HIGH (e.g. 0.05,4), not {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise UserError(f"{name} must be finite numbers, not {text!r}")
    if not lo < hi:
        raise UserError(f"{name}: LOW must be below HIGH, got {text!r}")
    return lo, hi


def checked_params(activation: str, items: list[str]) -> dict[str, float]:
    """:func:`parse_params`, then the same type and range checks as an experiment spec's."""
    from gradprobe.nets.activations import activation_names
    from gradprobe.spec_params import check_params

    params = parse_params(items)
    if activation not in activation_names():
        return params  # predict names the unknown activation
    try:
        return check_params("activation", activation, params)
    except ValueError as exc:
        raise UserError(str(exc)) from None


@theory_app.callback()
def theory(
    ctx: typer.Context,
    activation: str | None = typer.Option(
        None, "--activation", "-a", help="Activation name (tanh, relu, erf, ...)."
    ),
    sigma_w2: float | None = typer.Option(None, "--sigma-w2", help="Weight variance x fan-in."),
    sigma_b2: float | None = typer.Option(None, "--sigma-b2", help="Bias variance."),
    depth: int | None = typer.Option(None, "--depth", help="Also the layer-by-layer path."),
    q0: float | None = typer.Option(None, "--q0", help="Mean square of the inputs (default 1)."),
    param: list[str] = typer.Option(
        [], "--param", help="Activation parameter name=value (repeatable), e.g. slope=0.2."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Predict q*, chi1, c*, depth scales and phase for an activation and variances."""
    if ctx.invoked_subcommand is not None:
        given = [n for n, v in [("--activation", activation), ("--sigma-w2", sigma_w2),
                                ("--sigma-b2", sigma_b2), ("--depth", depth)] if v is not None]
        if given:
            raise UserError(
                f"{', '.join(given)} go after the sub-command: "
                f"gradprobe theory {ctx.invoked_subcommand} {given[0]} ..."
            )
        return
    from gradprobe.nets.activations import activation_names
    from gradprobe.theory import predict

    missing = [n for n, v in [("--activation", activation), ("--sigma-w2", sigma_w2),
                              ("--sigma-b2", sigma_b2)] if v is None]
    if missing:
        raise UserError(
            f"gradprobe theory needs {', '.join(missing)} (activations: "
            f"{', '.join(activation_names())}); or the sub-command 'phase'"
        )
    if depth is not None and not 1 <= depth <= MAX_THEORY_DEPTH:
        raise UserError(f"--depth must be between 1 and {MAX_THEORY_DEPTH}, not {depth}")
    pred = predict(activation, sigma_w2, sigma_b2, depth=depth, q0=q0,
                   params=checked_params(activation, param))
    if as_json:
        typer.echo(json.dumps(pred.to_dict()))
        return
    typer.echo(pred.summary())
    if depth is not None and pred.q_path is not None and pred.chi_path is not None:
        typer.echo("  layer      q^l     chi_l")
        show = sorted({0, 1, 2, depth // 2, depth - 2, depth - 1} & set(range(depth)))
        for i in show:
            chi = f"{pred.chi_path[i]:.5g}" if i < len(pred.chi_path) else "-"
            typer.echo(f"  {i + 1:5d}  {pred.q_path[i]:8.5g}  {chi:>8}")


@theory_app.command("phase")
def phase(
    activation: str = typer.Option("tanh", "--activation", "-a", help="Activation name."),
    param: list[str] = typer.Option([], "--param", help="Activation parameter name=value."),
    output: Path = typer.Option(Path("phase.png"), "--output", "-o", help="Figure path."),
    sigma_w2_range: str = typer.Option("0.05,4", "--sigma-w2-range", help="LOW,HIGH."),
    sigma_b2_range: str = typer.Option("0,0.5", "--sigma-b2-range", help="LOW,HIGH."),
    n: int = typer.Option(200, "--n", help="Grid points per axis."),
    q0: float = typer.Option(1.0, "--q0", help="Mean square of the inputs."),
) -> None:
    """Draw the (sigma_w2, sigma_b2) phase diagram: chi1, the critical line, |xi_grad|."""
    import numpy as np

    from gradprobe.report.theory_figures import plot_phase_diagram
    from gradprobe.theory import phase_diagram

    if not 2 <= n <= 2000:
        raise UserError(f"--n must be between 2 and 2000, not {n}")
    w_lo, w_hi = _range(sigma_w2_range, "--sigma-w2-range")
    b_lo, b_hi = _range(sigma_b2_range, "--sigma-b2-range")
    if w_lo <= 0 or b_lo < 0:
        raise UserError("sigma_w2 must be > 0 and sigma_b2 >= 0 in the ranges")
    if output.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UserError(f"-o must end in .png, .pdf or .svg, not {output.name!r}")
    data = phase_diagram(
        activation,
        np.linspace(w_lo, w_hi, n),
        np.linspace(b_lo, b_hi, n),
        params=checked_params(activation, param),
        q0=q0,
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    plot_phase_diagram(data, ax=ax)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    crit = data.critical_sigma_w2[0]
    where = f"critical sigma_w2 = {crit:.4g} at sigma_b2 = {data.sigma_b2[0]:g}" if np.isfinite(
        crit
    ) else "no critical point in the sigma_w2 range at the lowest sigma_b2"
    typer.echo(f"wrote {output} ({n}x{n} grid in {data.seconds:.2f} s; {where})")
