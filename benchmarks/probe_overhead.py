"""Probe overhead on a training step, measured as ratios to bare steps in one run.

A 20-layer width-256 ReLU MLP, batch 256, SGD, on the CPU (``--device cuda`` for a GPU).
Variants, interleaved round by round (who goes first rotates) so that machine drift hits
all of them alike:

* ``bare``: no probe;
* ``probe every=1``: every step recorded, all quantities, optimizer watched
  (``update_to_weight_ratio``), as gradprobe's trainer runs it;
* ``probe every=1, no watch``: the same without the optimizer snapshot;
* ``probe every=10``: one step in ten recorded (watched);
* ``tb histograms every step``: what users reach for today, a TensorBoard histogram of
  every layer's weight gradient every step (``SummaryWriter.add_histogram``).

Prints one line per variant: the median over rounds of (time per step / bare time per step
in the same round). Targets: every=1 <= 1.05x, every=10 <= 1.01x.

``--breakdown`` adds the probe with one capture at a time (every step, no watch).

Usage:
    python benchmarks/probe_overhead.py [--rounds 15] [--steps 20] [--threads N]
                                        [--device cpu|cuda] [--breakdown]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

import gradprobe as gp

DEPTH, WIDTH, BATCH, CLASSES = 20, 256, 256, 10


def build(width: int = WIDTH) -> nn.Sequential:
    """The benchmark network: DEPTH Linear layers, ReLU between them."""
    layers: list[nn.Module] = []
    for _ in range(DEPTH - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers.append(nn.Linear(width, CLASSES))
    return nn.Sequential(*layers)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20, help="steps per variant per round")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--width", type=int, default=WIDTH, help="hidden width (and input size)")
    ap.add_argument(
        "--breakdown", action="store_true",
        help="also time the probe with one capture at a time (every step, no watch)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build(args.width).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(BATCH, args.width, device=device)
    y = torch.randint(0, CLASSES, (BATCH,), device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def backward() -> None:
        loss_fn(model(x), y).backward()

    def update() -> None:
        opt.step()
        opt.zero_grad()

    from torch.utils.tensorboard import SummaryWriter

    tmp = tempfile.TemporaryDirectory()
    writer = SummaryWriter(tmp.name)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    tb_step = [0]

    def run_bare(n: int) -> None:
        for _ in range(n):
            backward()
            update()

    def run_probe(
        every: int, watch: bool, quantities: list[str] | None = None
    ) -> Callable[[int], None]:
        probe = gp.Probe(model, every=every, quantities=quantities)
        if watch:
            probe.watch(opt)

        def run(n: int) -> None:
            probe.attach()
            for _ in range(n):
                backward()
                probe.step()
                update()
            probe.detach()

        return run

    def run_tb(n: int) -> None:
        for _ in range(n):
            backward()
            for name, m in linears:
                writer.add_histogram(f"grad/{name}", m.weight.grad, tb_step[0])
            tb_step[0] += 1
            update()

    variants: dict[str, Callable[[int], None]] = {
        "bare": run_bare,
        "probe every=1": run_probe(1, watch=True),
        "probe every=1, no watch": run_probe(1, watch=False),
        "probe every=10": run_probe(10, watch=True),
        "tb histograms every step": run_tb,
    }
    if args.breakdown:
        for label, qs in [
            ("  only params", ["weight_grad_norm", "bias_grad_norm", "weight_norm"]),
            ("  only forward", ["forward_signal_norm", "preact_mean", "preact_std"]),
            ("  only grad_out", ["backward_signal_norm"]),
            ("  only grad_in+out", ["weight_factor", "between_factor"]),
            ("  only activations", ["mean_sq_derivative", "inactive_fraction"]),
            ("  hooks, no quantity", ["update_to_weight_ratio"]),
        ]:
            variants[label] = run_probe(1, watch=False, quantities=qs)
    names = list(variants)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.rounds + 1):  # round 0 warms up and is dropped
        k = r % len(names)
        for name in names[k:] + names[:k]:
            sync()
            t0 = time.perf_counter()
            variants[name](args.steps)
            sync()
            if r:
                times[name].append((time.perf_counter() - t0) / args.steps)
    writer.close()
    tmp.cleanup()

    where = (
        torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"{platform.machine()} CPU, {os.cpu_count()} cores visible, "
        f"{torch.get_num_threads()} torch threads"
    )
    print(
        f"# {DEPTH}-layer width-{args.width} ReLU MLP, batch {BATCH}, SGD on {where}; "
        f"torch {torch.__version__}; {args.rounds} rounds x {args.steps} steps"
    )
    bare = times["bare"]
    for name in names:
        ratio = statistics.median(t / b for t, b in zip(times[name], bare, strict=True))
        ms = 1e3 * statistics.median(times[name])
        print(f"{name:<26} {ratio:6.3f}x bare   ({ms:.2f} ms/step)")


if __name__ == "__main__":
    main()
