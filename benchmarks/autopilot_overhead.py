"""Autopilot's step-time overhead, as ratios to plain training measured in one run.

The demo's network and settings (digits, 30-layer width-64 MLP, batch 128, SGD lr 0.05),
and the same net at width 256, on the CPU, through :func:`gradprobe.train.train` with no
probe. Each round times a fixed number of steps of each variant, interleaved (who goes
first rotates) so that machine drift hits all of them alike. The init (one forward pass,
before the first step) is timed on its own.

* ``plain``: no callback;
* ``autopilot every=10``: trust ratio, adaptive clipping and unit revival, checks every
  10 steps (the default);
* ``autopilot every=10, no clip``: the same without adaptive clipping, whose per-step
  gradient norms are then not taken between checks;
* ``autopilot every=10, torch path``: the default without the compiled per-step kernel
  (``native/scale.c``): torch's fused norm, read-back and fused multiply, as before it;
* ``autopilot every=1``: a check on every step (the worst case);
* ``autopilot init only``: autopilot's init, then no per-step work: what the net it
  leaves costs by itself.

The loop's own evaluation is pushed past the end (``eval_every`` > steps) and the clock
starts at step 5, so the ratio is of training steps. Prints the median over rounds of
(time / plain time in the same round), the ratio of each variant's fastest run to
plain's fastest (the least disturbed by other work on a shared machine), the median
ratio of the process's CPU time (``time.process_time``: time spent waiting for a core
that other work holds does not count), and the median CPU time of the thread inside the
callback's per-step hooks per step, as a share of a plain step's CPU time (the steadiest
number on a shared machine; it leaves out the revival hooks' calls inside the forward
pass of a check step). Target: every=10 <= 1.05x.

Measured (shared 2-core Intel Xeon, load average 2-4 from other work; docs/autopilot.md):
width 64, 15 rounds: every=10 1.074x (CPU time 1.080x, 7.0 % in its hooks), torch path
1.116x (10.0 %), init only 1.041x, every=1 1.246x; width 256, 5 rounds: every=10 1.113x
(6.4 %), torch path 1.139x (8.4 %), init only 1.048x. The target is not met.

Usage:
    python benchmarks/autopilot_overhead.py [--rounds 7] [--steps 100] [--threads 1]
        [--widths 64,256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gradprobe.autopilot import Autopilot
from gradprobe.data import load_data
from gradprobe.nets.plain import build
from gradprobe.spec import load_spec
from gradprobe.train import Callback, train

SKIP = 5  # steps before the clock starts (the init and first checks are timed apart)


class _Clock(Callback):
    """Wall and CPU time from the start of step SKIP to the end of the last step."""

    def on_step_start(self, loop, step):
        if step == SKIP:
            self.t0 = (time.perf_counter(), time.process_time())

    def on_end(self, loop):
        self.seconds = (time.perf_counter() - self.t0[0], time.process_time() - self.t0[1])


class _TorchPath(Autopilot):
    """Autopilot without the compiled per-step kernel: torch's fused norm and multiply."""

    def _setup(self, loop):
        super()._setup(loop)
        self._native = None


class _InitOnly(Autopilot):
    """Autopilot's init, then nothing: the net it trains, without its per-step work."""

    def on_step_start(self, loop, step):
        pass

    def after_backward(self, loop, step, loss):
        pass


def _time_hooks(cb: Callback) -> list[float]:
    """Wrap a callback's per-step hooks to add up the thread's CPU time spent in them."""
    spent = [0.0]
    for name in ("on_step_start", "after_backward", "after_update"):
        hook = getattr(cb, name)

        def timed(*args, _hook=hook):
            t0 = time.thread_time()
            _hook(*args)
            spent[0] += time.thread_time() - t0

        setattr(cb, name, timed)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--widths", default="64,256", help="comma-separated net widths")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for width in (int(w) for w in args.widths.split(",")):
        measure(width, args)


def measure(width: int, args: argparse.Namespace) -> None:
    """Time the variants on the 30-layer net of this width and print the ratios."""
    spec = load_spec({"net": {"depth": 30, "width": width, "activation": "tanh",
                              "init": "orthogonal"}, "data": {"name": "digits"},
                      "train": {"steps": args.steps, "eval_every": args.steps + 1}})
    data = load_data(spec.data)
    variants = {
        "plain": lambda: [],
        "autopilot every=10": lambda: [Autopilot(data=data, every=10)],
        "autopilot every=10, no clip": lambda: [Autopilot(data=data, every=10, clip=None)],
        "autopilot every=10, torch path": lambda: [_TorchPath(data=data, every=10)],
        "autopilot every=1": lambda: [Autopilot(data=data, every=1)],
        "autopilot init only": lambda: [_InitOnly(data=data)],
    }

    def timed(make) -> tuple[float, float, float]:
        model = build(spec.net, data.in_shape, data.n_classes, seed=0)
        clock, hooks = _Clock(), make()
        spent = [_time_hooks(cb) for cb in hooks]
        train(model, data, spec.train, probe=False, callbacks=[*hooks, clock])
        return (*clock.seconds, sum(s[0] for s in spent) / args.steps)

    for make in variants.values():  # warm-up: first calls pay for lazy imports and caches
        timed(make)
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    inside: dict[str, list[float]] = {name: [] for name in variants}
    best: dict[str, float] = {}
    names = list(variants)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        times = {name: timed(variants[name]) for name in order}
        for name in names:
            wall, used, hooks = times[name]
            ratios[name].append(wall / times["plain"][0])
            cpu[name].append(used / times["plain"][1])
            inside[name].append(hooks / (times["plain"][1] / (args.steps - SKIP)))
            best[name] = min(best.get(name, wall), wall)
    model = build(spec.net, data.in_shape, data.n_classes, seed=0)
    from gradprobe.autopilot.init import data_dependent_init

    t0 = time.perf_counter()
    data_dependent_init(model, data.x_train[:512])
    init_s = time.perf_counter() - t0
    print(f"30-layer width-{width} tanh MLP, batch 128, {args.steps} steps per run, "
          f"{args.rounds} rounds, {args.threads} thread(s)")
    print("  variant                          median ratio   fastest runs   CPU time, median"
          "   in its hooks")
    for name in names:
        fastest = best[name] / best["plain"]
        print(f"  {name:<31} {statistics.median(ratios[name]):>9.3f}x {fastest:>12.3f}x "
              f"{statistics.median(cpu[name]):>12.3f}x {statistics.median(inside[name]):>12.1%}")
    print(f"  init (512 samples, once): {init_s * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
