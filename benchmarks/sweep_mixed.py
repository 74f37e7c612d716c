"""The mixed sweep through the public ``gp.sweep``, store and all, against a plain loop.

The case (issue 16): 4 activations x 4 inits x 4 seeds (64 configurations), MLP depth 10
width 64 on digits, batch 128, 50 SGD steps. Two ways of getting the same 64 trained
networks, interleaved round by round in one process (the order alternates):

* ``sweep``: ``gp.sweep(spec, store=<a new SQLite file>)`` with its defaults: the probe
  recording every 10 steps, evaluations at steps 0, 1, 26 and 50, every metric row stored,
  the thread policy choosing the threads, the result table built from the store;
* ``loop``: a plain PyTorch loop that records nothing: per configuration ``build`` (the same
  initial weights), ``torch.optim.SGD``, ``F.cross_entropy``, reshuffled minibatches, and
  one final test accuracy; once per ``--loop-threads`` value (default: 1 thread, the
  faster choice for this small model, and torch's default).

Prints each round, the medians, the speedup against each loop and ``speedup X`` against
the fastest loop (target >= 4 on both CPUs); ``--torch-activations`` also times the sweep
without the compiled ReLU / leaky ReLU / sigmoid kernels; ``--profile`` profiles one more
sweep.

    python benchmarks/sweep_mixed.py --rounds 5
    OMP_NUM_THREADS=1 python benchmarks/sweep_mixed.py --loop-threads 1   # one core
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import torch
from sweep_throughput import machine  # this folder
from torch.nn import functional as F

import gradprobe as gp
from gradprobe.data import Dataset, load_data
from gradprobe.native import activations as activation_kernels
from gradprobe.nets.plain import build
from gradprobe.spec import ExperimentSpec
from gradprobe.sweeps.grid import expand
from gradprobe.sweeps.spec import load_sweep_spec

ACTIVATIONS = ["sigmoid", "tanh", "relu", "leaky_relu"]
INITS = ["xavier_normal", "he_normal", "orthogonal", {"name": "normal", "sigma_w2": 1.5}]


def sweep_spec(name: str, steps: int) -> dict:
    """The issue's case as a sweep spec."""
    return {
        "name": name,
        "base": {"net": {"kind": "mlp", "depth": 10, "width": 64},
                 "data": {"name": "digits"},
                 "train": {"optimizer": "sgd", "lr": 0.05, "steps": steps,
                           "batch_size": 128}},
        "grid": {"net.activation": ACTIVATIONS, "net.init": INITS,
                 "train.seed": [0, 1, 2, 3]},
    }


def time_sweep(folder: Path, label: str, steps: int, kernels: bool = True,
               threads: int | None = None) -> float:
    """Wall seconds of one ``gp.sweep`` into a new store file; ``kernels=False``: ReLU,
    leaky ReLU and sigmoid through torch's ops, as before their compiled kernels;
    ``threads``: gp.sweep's (None: its thread policy)."""
    saved = activation_kernels.supports
    if not kernels:
        activation_kernels.supports = lambda name, slope=0.0: False
    try:
        start = time.perf_counter()
        frame = gp.sweep(sweep_spec("mixed", steps), store=folder / f"{label}.sqlite",
                         threads=threads)
        took = time.perf_counter() - start
    finally:
        activation_kernels.supports = saved
    assert (frame["status"] != "missing").all()
    return took


def time_loop(steps: int, threads: int) -> float:
    """Wall seconds of training every configuration with a plain PyTorch loop."""
    configs = [c.spec for c in expand(load_sweep_spec(sweep_spec("loop", steps)))]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        data = load_data(configs[0].data)  # once: every configuration trains on it
        for spec in configs:
            plain_run(spec, data)
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(before)


def plain_run(spec: ExperimentSpec, data: Dataset) -> float:
    """Train one configuration the plain way; its final test accuracy."""
    model = build(spec.net, data.in_shape, data.n_classes, seed=spec.train.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.train.lr)
    generator = torch.Generator().manual_seed(spec.train.seed)
    n, batch = len(data.x_train), spec.train.batch_size or len(data.x_train)
    order, pos = torch.randperm(n, generator=generator), 0
    for _ in range(spec.train.steps):
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=generator), 0
        idx = order[pos : pos + batch]
        pos += batch
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float((model(data.x_test).argmax(1) == data.y_test).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--loop-threads", type=int, nargs="+", default=[1, 0],
                        help="torch threads of the loop, one variant each (0: torch's "
                             "default)")
    parser.add_argument("--profile", action="store_true",
                        help="profile one more sweep and print its top functions")
    parser.add_argument("--sort", default="cumulative", help="the profile's order (pstats)")
    parser.add_argument("--one-thread", action="store_true",
                        help="also time the sweep with threads=1 (the policy's choice aside)")
    parser.add_argument("--torch-activations", action="store_true",
                        help="also time the sweep with ReLU, leaky ReLU and sigmoid through "
                             "torch's ops (no compiled kernels)")
    args = parser.parse_args()
    print(f"machine: {machine('cpu')}; load average at start {os.getloadavg()[0]:.2f}")
    default = torch.get_num_threads()
    loops = {f"loop, {n or default} thread{'s' if (n or default) > 1 else ''}": n or default
             for n in args.loop_threads}
    sweeps = (["sweep"] + (["sweep, 1 thread"] if args.one_thread else [])
              + (["sweep, torch act."] if args.torch_activations else []))
    times: dict[str, list[float]] = {**{k: [] for k in sweeps}, **{k: [] for k in loops}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        time_sweep(folder, "warmup", 2)  # data, kernels, imports
        time_loop(2, 1)
        for r in range(args.rounds):
            order = list(times) if r % 2 == 0 else list(times)[::-1]
            for label in order:
                took = (time_loop(args.steps, loops[label]) if label in loops
                        else time_sweep(folder, f"r{r}{len(label)}", args.steps,
                                        kernels="torch" not in label,
                                        threads=1 if "1 thread" in label else None))
                times[label].append(took)
                print(f"round {r} {label:17s} {took:6.2f} s", flush=True)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            time_sweep(folder, "profiled", args.steps)
            profiler.disable()
            stats = pstats.Stats(profiler).sort_stats(args.sort)
            stats.print_stats(40)
    if not args.rounds:
        return
    sweep_s = statistics.median(times["sweep"])
    print(f"median: sweep {sweep_s:.2f} s (gp.sweep's thread policy, torch default "
          f"{default}); load average at end {os.getloadavg()[0]:.2f}")
    for label in sweeps[1:]:
        other = statistics.median(times[label])
        print(f"median: {label} {other:.2f} s: sweep / this {sweep_s / other:.2f}")
    print(f"best round: sweep {min(times['sweep']):.2f} s, loop "
          f"{min(min(times[k]) for k in loops):.2f} s")
    for label in loops:
        loop_s = statistics.median(times[label])
        print(f"median: {label} {loop_s:.2f} s: speedup {loop_s / sweep_s:.2f}")
    best_loop = min(statistics.median(times[label]) for label in loops)
    print(f"speedup {best_loop / sweep_s:.2f} (against the fastest loop)")


if __name__ == "__main__":
    main()
