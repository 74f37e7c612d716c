"""``gradprobe diagnose``: the command over :func:`gradprobe.diagnose` and :func:`gradprobe.repair`.

Registered by ``gradprobe.cli`` as ``app.command("diagnose")(diagnose_command)``. Exit code 0
when the model is healthy, 1 when there are findings, 2 for bad input (a ``UserError``,
turned into one line by the CLI's root group).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import typer


def check_options(steps: int, budget: int, lr: float | None) -> None:
    """Refuse step counts over the cap and learning rates that are not finite and > 0."""
    from gradprobe.errors import UserError
    from gradprobe.limits import MAX_STEPS

    for flag, value in (("--steps", steps), ("--budget", budget)):
        if value > MAX_STEPS:
            raise UserError(f"{flag} must be at most {MAX_STEPS}, not {value}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise UserError(f"--lr must be a finite number > 0, not {lr}")


def diagnose_command(
    target: str = typer.Argument(
        ..., help="file.py:factory (factory() returns an nn.Module), or a checkpoint with --arch."
    ),
    data: str = typer.Option(
        "digits", "--data", help="Dataset name or an .npz/.csv path (an npz may hold "
        "input_ids, attention_mask, token_type_ids and labels: passed as keyword arguments)."
    ),
    loss: str = typer.Option(
        "auto", "--loss", help="auto (integer labels: cross_entropy, float targets: mse), "
        "cross_entropy (per-sample or per-token labels, -100 ignored) or mse."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Samples per probed batch and training step "
        "(default 128)."
    ),
    no_standardize: bool = typer.Option(
        False, "--no-standardize", help="Keep float features as they are (integer data is "
        "never standardised)."
    ),
    steps: int = typer.Option(0, "--steps", min=0, help="Also train a copy for this many steps."),
    repair: bool = typer.Option(False, "--repair", help="Try candidate fixes and rank them."),
    budget: int = typer.Option(200, "--budget", min=1, help="Training steps per repair candidate."),
    lr: float | None = typer.Option(None, "--lr", help="SGD learning rate (default 0.1)."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="state_dict (torch.save) or TorchScript file with the weights."
    ),
    arch: str | None = typer.Option(
        None, "--arch", help="file.py:factory giving the architecture when TARGET is a checkpoint."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for batches and re-initialisation."),
    as_json: bool = typer.Option(False, "--json", help="Print the diagnosis as JSON."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the diagnosis as Markdown."),
) -> None:
    """Diagnose a model's gradient flow: what is wrong, where, why, and which fix helps."""
    from gradprobe.diagnosis import DEFAULT_LR
    from gradprobe.diagnosis import diagnose as run_diagnose
    from gradprobe.diagnosis import repair as run_repair
    from gradprobe.diagnosis.inputs import data_argument, named_loss
    from gradprobe.diagnosis.loading import load_model
    from gradprobe.errors import UserError

    if as_json and markdown:
        raise UserError("--json and --markdown: choose one")
    check_options(steps=steps, budget=budget, lr=lr)
    from gradprobe.diagnosis.evidence import BATCH_SIZE

    loss_fn = named_loss(loss)
    batch_size = BATCH_SIZE if batch_size is None else batch_size
    dataset = data_argument(data, standardize=not no_standardize)
    model, label = load_model(target, checkpoint, arch, seed)
    rate = DEFAULT_LR if lr is None else lr
    diag = run_diagnose(model, dataset, loss_fn, steps=steps, lr=rate, seed=seed, name=label,
                        batch_size=batch_size, progress=True)
    if repair:
        diag.repair = run_repair(model, dataset, loss_fn, budget_steps=budget, lr=rate,
                                 seed=seed, batch_size=batch_size, progress=True)
    if as_json:
        sys.stdout.write(json.dumps(diag.to_dict(), indent=1, allow_nan=False) + "\n")
    elif markdown:
        sys.stdout.write(diag.to_markdown() + "\n")
    else:
        sys.stdout.write(str(diag) + "\n")
        if diag.repair is not None:
            sys.stdout.write("\n" + str(diag.repair))
    raise typer.Exit(0 if diag.healthy else 1)
