"""Probe overhead on a training step, measured as ratios to bare steps in one run.

A 20-layer width-256 ReLU MLP, batch 256, SGD, on the CPU (``--device cuda`` for a GPU).
Every variant trains its own copy of the model (same weights) with its probe attached
throughout; variants are interleaved round by round, ``--steps`` steps each (who goes first
rotates), so that machine drift hits all of them alike:

* ``bare``: no probe;
* ``probe every=1``: every step recorded, all quantities, optimizer watched
  (``update_to_weight_ratio``), as gradprobe's trainer runs it;
* ``probe every=1, torch reductions``: the same with the native one-pass kernels turned off
  (what a machine without a C compiler runs; the path before issue 16);
* ``probe every=1, no watch``: without the optimizer snapshot;
* ``probe every=10``: one step in ten recorded (watched);
* peers (``benchmarks/peers.py``), each run when its package is installed and named as
  skipped when not: one gradient norm per parameter (Lightning's ``grad_norm``), TensorBoard
  gradient histograms every step, W&B ``watch(log="gradients")`` every step and every 10
  (offline), Cockpit with GradNorm only and Cockpit "economy" (``--slow-steps`` steps per
  round: it is two orders of magnitude slower).

Before timing, one step checks that gradprobe's ``weight_grad_norm`` equals autograd's
(``.grad`` of every weight) and Cockpit's ``GradNorm`` on the same step.

Prints one line per variant: the median over rounds of (time per step / bare time per step
in the same round). Targets (issue 16): every=1 <= 1.10x (stretch 1.05x), every=10 <= 1.02x.

``--breakdown`` adds the probe with one capture at a time (every step, no watch), and the
full probe with its reductions skipped (every hook, no pass over any tensor: the price of
the hooks, the Python and the bookkeeping alone), and empty hooks where the probe puts its
own (torch's hook machinery alone).

``--compare SRC`` times this tree's gradprobe against another checkout's (``SRC`` is its
``src`` folder, e.g. from ``git archive <commit> src``), interleaved round by round: two
worker processes, one per tree, each run one round of every variant in turn (who goes
first alternates), and each variant's ratio is to its own process's bare step of the same
round. Peers are skipped there.

Usage:
    python benchmarks/probe_overhead.py [--rounds 40] [--steps 2] [--threads N]
                                        [--device cpu|cuda] [--breakdown] [--no-peers]
                                        [--compare OTHER/src]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

import gradprobe as gp
from gradprobe.native import build as native_build
from gradprobe.native import reduce as native_reduce

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402  (the sibling module of peer variants)

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
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--steps", type=int, default=2, help="steps per variant per round")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--width", type=int, default=WIDTH, help="hidden width (and input size)")
    ap.add_argument(
        "--breakdown", action="store_true",
        help="also time the probe with one capture at a time (every step, no watch)",
    )
    ap.add_argument("--no-peers", action="store_true", help="skip the peer tools")
    ap.add_argument("--slow-steps", type=int, default=2,
                    help="steps per round for Cockpit economy (very slow)")
    ap.add_argument("--compare", metavar="SRC",
                    help="also time the gradprobe under SRC, interleaved by round")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.compare:
        compare(args)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build(args.width).to(device)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(BATCH, args.width, device=device)
    y = torch.randint(0, CLASSES, (BATCH,), device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run_probe(every: int | None, watch: bool = False, quantities: list[str] | None = None,
                  reductions: str = "native", hooks_only: bool = False
                  ) -> Callable[[int], None]:
        """Steps of a private copy of the model (bare too, so that all are alike), with a
        probe attached throughout (``every=None``: none; ``hooks_only``: empty hooks)."""
        own = copy.deepcopy(model)
        own_opt = torch.optim.SGD(own.parameters(), lr=1e-3)
        if hooks_only:
            empty_hooks(own, own_opt)
        probe = None if every is None else gp.Probe(own, every=every, quantities=quantities)
        if probe is not None:
            if watch:
                probe.watch(own_opt)
            probe.attach()

        def run(n: int) -> None:
            with reductions_as(reductions):
                for _ in range(n):
                    loss_fn(own(x), y).backward()
                    if probe is not None:
                        probe.step()
                    own_opt.step()
                    own_opt.zero_grad()

        return run

    variants: dict[str, Callable[[int], None]] = {
        "bare": run_probe(None),
        "probe every=1": run_probe(1, watch=True),
        "probe every=1, torch reductions": run_probe(1, watch=True, reductions="torch"),
        "probe every=1, no watch": run_probe(1, watch=False),
        "probe every=10": run_probe(10, watch=True),
    }
    steps_of = {name: args.steps for name in variants}
    tmp = peers.new_tempdir()
    skipped: list[str] = []
    if not args.no_peers:
        batch = (x, y)

        def opt_for(m: nn.Module) -> torch.optim.Optimizer:
            return torch.optim.SGD(m.parameters(), lr=1e-3)

        check_norms(model, batch)
        variants["param grad norms (Lightning)"] = peers.param_grad_norms(model, opt_for, batch)
        steps_of["param grad norms (Lightning)"] = args.steps
        for name, (fn, why), steps in [
            ("tb histograms every step",
             peers.tensorboard_histograms(model, opt_for, batch, tmp.name), args.steps),
            ("wandb watch every step", peers.wandb_watch(model, opt_for, batch, tmp.name, 1),
             args.steps),
            ("wandb watch every 10", peers.wandb_watch(model, opt_for, batch, tmp.name, 10),
             args.steps),
            ("cockpit GradNorm", peers.cockpit_variant(model, opt_for, batch, False), args.steps),
            ("cockpit economy", peers.cockpit_variant(model, opt_for, batch, True),
             args.slow_steps),
        ]:
            if fn is None:
                skipped.append(f"{name}: {why}")
            else:
                variants[name], steps_of[name] = fn, steps
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
            steps_of[label] = args.steps
        variants["  every=1, reductions skipped"] = run_probe(1, watch=True, reductions="skip")
        variants["  empty hooks, the probe's shape"] = run_probe(None, hooks_only=True)
        steps_of["  every=1, reductions skipped"] = args.steps
        steps_of["  empty hooks, the probe's shape"] = args.steps
    names = list(variants)

    def one_round(r: int) -> dict[str, float]:
        """Seconds per step of every variant, the order rotated by ``r``."""
        out = {}
        k = r % len(names)
        for name in names[k:] + names[:k]:
            sync()
            t0 = time.perf_counter()
            variants[name](steps_of[name])
            sync()
            out[name] = (time.perf_counter() - t0) / steps_of[name]
        return out

    if args.worker:  # --compare's side: one round per line read, its times as JSON
        for line in sys.stdin:
            print(json.dumps(one_round(int(line))), flush=True)
        tmp.cleanup()
        return
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.rounds + 1):  # round 0 warms up and is dropped
        for name, t in one_round(r).items():
            if r:
                times[name].append(t)
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
    reason = native_build.unavailable_reason()
    print(f"# native one-pass reductions: {'off (' + reason + ')' if reason else 'on'}")
    for name in names:
        ratio, ms = _median_ratio(times, name)
        print(f"{name:<34} {ratio:7.3f}x bare   ({ms:.2f} ms/step)")
    for line in skipped:
        print(f"skipped {line}")


def _median_ratio(times: dict[str, list[float]], name: str) -> tuple[float, float]:
    """Median over rounds of the time / the bare time of the same round, and the median
    time in ms."""
    bare = times["bare"]
    ratio = statistics.median(t / b for t, b in zip(times[name], bare, strict=True))
    return ratio, 1e3 * statistics.median(times[name])


def compare(args: argparse.Namespace) -> None:
    """This tree's gradprobe against the one under ``args.compare``, interleaved by round
    (one worker process per tree; see the module docstring)."""
    trees = {"this": str(Path(gp.__file__).resolve().parents[1]),
             "other": str(Path(args.compare).resolve())}
    argv = [sys.executable, os.path.abspath(__file__), "--worker", "--no-peers",
            "--rounds", str(args.rounds), "--steps", str(args.steps), "--threads",
            str(args.threads), "--device", args.device, "--width", str(args.width)]
    argv += ["--breakdown"] if args.breakdown else []
    workers = {label: subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, env=dict(os.environ, PYTHONPATH=src))
               for label, src in trees.items()}
    times: dict[str, dict[str, list[float]]] = {label: {} for label in trees}
    for r in range(args.rounds + 1):  # round 0 warms up and is dropped
        for label in (["this", "other"] if r % 2 else ["other", "this"]):
            worker = workers[label]
            worker.stdin.write(f"{r}\n")  # type: ignore[union-attr]
            worker.stdin.flush()  # type: ignore[union-attr]
            got = json.loads(worker.stdout.readline())  # type: ignore[union-attr]
            for name, t in got.items():
                times[label].setdefault(name, []).extend([t] if r else [])
    for worker in workers.values():
        worker.communicate()
    print(f"# {DEPTH}-layer width-{args.width} ReLU MLP, batch {BATCH}, "
          f"{torch.get_num_threads() if not args.threads else args.threads} torch threads; "
          f"{args.rounds} rounds x {args.steps} steps, the two trees interleaved by round")
    print(f"# this: {trees['this']}\n# other: {trees['other']}")
    print(f"{'variant':<34} {'this':>8} {'other':>8}   (ratio to the same tree's bare step)")
    for name in times["this"]:
        this = _median_ratio(times["this"], name)[0]
        other = _median_ratio(times["other"], name)[0] if name in times["other"] else math.nan
        print(f"{name:<34} {this:7.3f}x {other:7.3f}x")


def empty_hooks(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    """Hooks where a watching probe puts its own, each doing nothing: per Linear a forward
    pre-hook and a forward hook that registers a post-hook on its output's autograd node,
    a post-accumulate hook on its weight; per ReLU a forward hook; the optimizer's step
    pre- and post-hooks. Their price is torch's hook machinery, not gradprobe's Python."""

    def node_hook(grad_inputs: object, grad_outputs: object) -> None:
        return None

    def layer_post(module: nn.Module, args: object, out: torch.Tensor) -> None:
        out.grad_fn.register_hook(node_hook)  # type: ignore[union-attr]

    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.register_forward_pre_hook(lambda module, args: None)
            m.register_forward_hook(layer_post)
            m.weight.register_post_accumulate_grad_hook(lambda p: None)
        elif isinstance(m, nn.ReLU):
            m.register_forward_hook(lambda module, args, out: None)
    opt.register_step_pre_hook(lambda *a: None)
    opt.register_step_post_hook(lambda *a: None)


_SKIPPED = {  # stand-ins for the native reductions that touch no tensor
    "moments": lambda t, tiny=0.0: (0.0, 1.0), "sum_sq": lambda t, tiny=0.0: 1.0,
    "sum_sq_many": lambda ts, tiny=0.0: [1.0] * len(ts),
    "copy_sum_sq": lambda src, dst, tiny=0.0: 1.0, "diff_sum_sq": lambda a, b, tiny=0.0: 1.0,
    "counts": lambda t, batched, nonzero=False: (1.0, 1.0),
    "moments_counts": lambda t, batched, tiny=0.0: (0.0, 1.0, 1.0, 1.0),
}


@contextlib.contextmanager
def reductions_as(kind: str) -> Iterator[None]:
    """``native``: as installed; ``torch``: the native library off (torch's reductions);
    ``skip``: every reduction replaced by a constant (the hooks' cost alone)."""
    if kind == "native":
        yield
        return
    # a kernel an older gradprobe lacks (--compare) is left alone
    saved = {name: getattr(native_reduce, name) for name in _SKIPPED
             if hasattr(native_reduce, name)}
    load = native_build.load
    try:
        if kind == "torch":
            native_build.load = lambda: None  # type: ignore[assignment]
        else:
            for name in saved:
                setattr(native_reduce, name, _SKIPPED[name])
        yield
    finally:
        native_build.load = load  # type: ignore[assignment]
        for name, fn in saved.items():
            setattr(native_reduce, name, fn)


def check_norms(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """gradprobe's weight-gradient norms against autograd's and Cockpit's, one step."""
    probe = gp.Probe(model, quantities=["weight_grad_norm"])
    with probe:
        model.zero_grad()
        nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
        probe.step()
    ours = probe.frame().sort_values("depth")["value"].to_numpy()
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    autograd = torch.stack([w.grad.norm() for w in weights]).double().numpy()
    model.zero_grad()
    worst = float(abs(ours / autograd - 1).max())
    line = f"# weight_grad_norm vs autograd: max rel. difference {worst:.1e}"
    cockpit = peers.cockpit_grad_norms(model, batch)
    if cockpit is not None:
        params = list(model.parameters())
        ids = [next(i for i, p in enumerate(params) if p is w) for w in weights]
        theirs = [cockpit[i] for i in ids]
        worst_c = max(abs(a / b - 1) for a, b in zip(ours, theirs, strict=True))
        line += f"; vs Cockpit GradNorm: {worst_c:.1e}"
    print(line)


if __name__ == "__main__":
    main()
