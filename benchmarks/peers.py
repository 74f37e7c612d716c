"""Peer monitoring tools as benchmark variants, each used the way its documentation shows.

Every factory returns ``None`` (and the reason) when its package is not installed, so the
benchmark runs with whatever is there and says what it skipped. A peer that keeps hooks on
its model gets a private copy of the model (same weights), so the others never pay for it.

* ``param grad norms``: one 2-norm per parameter, what Lightning's ``grad_norm`` utility
  computes (``torch.linalg.vector_norm`` of each ``.grad``), read back once per step;
* ``tb histograms``: a TensorBoard histogram of every weight gradient
  (``SummaryWriter.add_histogram``);
* ``wandb watch``: ``wandb.watch(model, log="gradients", log_freq=k)`` in offline mode, with
  one ``wandb.log`` per step so that the histograms are committed;
* ``cockpit GradNorm`` / ``cockpit economy``: Cockpit (BackPACK) with only its gradient-norm
  quantity, and with its "economy" configuration.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from collections.abc import Callable

import torch
from torch import nn

StepFn = Callable[[int], None]
Batch = tuple[torch.Tensor, torch.Tensor]


def param_grad_norms(model: nn.Module, opt_for: Callable, batch: Batch) -> StepFn:
    """One gradient norm per parameter, every step."""
    opt = opt_for(model)
    params = [p for p in model.parameters() if p.requires_grad]

    def run(n: int) -> None:
        for _ in range(n):
            nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
            torch.stack([torch.linalg.vector_norm(p.grad) for p in params]).tolist()
            opt.step()
            opt.zero_grad()

    return run


def tensorboard_histograms(
    model: nn.Module, opt_for: Callable, batch: Batch, tmp: str
) -> tuple[StepFn | None, str]:
    """Histogram of every weight gradient, every step."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # tensorboard not installed
        return None, f"tensorboard not installed ({exc})"
    writer = SummaryWriter(os.path.join(tmp, "tb"))
    opt = opt_for(model)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    counter = [0]

    def run(n: int) -> None:
        for _ in range(n):
            nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
            for name, m in layers:
                writer.add_histogram(f"grad/{name}", m.weight.grad, counter[0])
            counter[0] += 1
            opt.step()
            opt.zero_grad()

    return run, ""


def wandb_watch(
    model: nn.Module, opt_for: Callable, batch: Batch, tmp: str, every: int
) -> tuple[StepFn | None, str]:
    """``wandb.watch(log="gradients", log_freq=every)`` on a private copy, offline."""
    try:
        import wandb
    except ImportError:
        return None, "wandb not installed (pip install wandb)"
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    own = copy.deepcopy(model)
    opt = opt_for(own)
    # watch() logs through the global run, so every watched copy shares one run
    run_ = wandb.run or wandb.init(mode="offline", dir=tmp, project="gradprobe-bench")
    run_.watch(own, log="gradients", log_freq=every)

    def run(n: int) -> None:
        for _ in range(n):
            loss = nn.functional.cross_entropy(own(batch[0]), batch[1])
            loss.backward()
            run_.log({"loss": float(loss.detach())})
            opt.step()
            opt.zero_grad()

    return run, ""


def _cockpit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cockpit imports pkg_resources (setuptools<81)
        import cockpit
        import cockpit.utils.configuration
        import cockpit.utils.schedules
        from backpack import extend
    return cockpit, extend


def cockpit_variant(
    model: nn.Module, opt_for: Callable, batch: Batch, economy: bool
) -> tuple[StepFn | None, str]:
    """Cockpit with GradNorm only, or its "economy" configuration, on a private copy."""
    try:
        cockpit, extend = _cockpit()
    except Exception as exc:  # not installed, or pkg_resources missing
        return None, f"cockpit unavailable ({type(exc).__name__}: {exc}); " \
                     "pip install cockpit-for-pytorch 'setuptools<81'"
    own = extend(copy.deepcopy(model))
    opt = opt_for(own)
    loss_fn = extend(nn.CrossEntropyLoss())
    per_sample = nn.CrossEntropyLoss(reduction="none")
    every = cockpit.utils.schedules.linear(1)
    if economy:
        quantities = cockpit.utils.configuration.configuration("economy", track_schedule=every)
    else:
        quantities = [cockpit.quantities.GradNorm(every)]
    cp = cockpit.Cockpit(own.parameters(), quantities=quantities)
    counter = [0]

    def run(n: int) -> None:
        for _ in range(n):
            out = own(batch[0])
            loss = loss_fn(out, batch[1])
            losses = per_sample(out, batch[1])
            info = {"batch_size": len(batch[0]), "individual_losses": losses, "loss": loss,
                    "optimizer": opt}
            with cp(counter[0], info=info):
                loss.backward(create_graph=cp.create_graph(counter[0]))
            counter[0] += 1
            opt.step()
            opt.zero_grad()

    return run, ""


def cockpit_grad_norms(model: nn.Module, batch: Batch) -> list[float] | None:
    """Cockpit's GradNorm (one norm per parameter) on one step of a copy of ``model``."""
    try:
        cockpit, extend = _cockpit()
    except Exception:
        return None
    own = extend(copy.deepcopy(model))
    loss_fn = extend(nn.CrossEntropyLoss())
    out = own(batch[0])
    loss = loss_fn(out, batch[1])
    info = {"batch_size": len(batch[0]),
            "individual_losses": nn.CrossEntropyLoss(reduction="none")(out, batch[1]),
            "loss": loss, "optimizer": torch.optim.SGD(own.parameters(), lr=0.0)}
    cp = cockpit.Cockpit(own.parameters(),
                         quantities=[cockpit.quantities.GradNorm(cockpit.utils.schedules.linear(1))])
    with cp(0, info=info):
        loss.backward(create_graph=cp.create_graph(0))
    return [float(v) for v in cp.get_output()[0]["GradNorm"]]


def new_tempdir() -> tempfile.TemporaryDirectory:
    """A scratch folder for the peers' log files."""
    # a peer's background writer (TensorBoard's event file) may still be flushing at exit
    return tempfile.TemporaryDirectory(prefix="gradprobe-bench-", ignore_cleanup_errors=True)
