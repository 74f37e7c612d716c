"""The thread policy measured: 1 thread against 2 for a small and a large model.

Each model trains through ``gp.run`` (probe on, in-memory store) with ``threads=1`` and
``threads=2`` in turn, interleaved round by round (the order alternates), and the median
wall time of each is printed with the ratio. What the policy would choose for each model
is printed beside it (:func:`gradprobe.threads.choose_threads`).

    python benchmarks/thread_policy.py --rounds 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import gradprobe as gp
from gradprobe.data import load_data
from gradprobe.nets.plain import build
from gradprobe.spec import load_spec
from gradprobe.threads import available_cores, choose_threads, parameter_count

MODELS = {
    "small (depth 10, width 64)": {"depth": 10, "width": 64},
    "below the threshold (depth 10, width 256)": {"depth": 10, "width": 256},
    "above the threshold (depth 6, width 512)": {"depth": 6, "width": 512},
    "large (depth 8, width 1024)": {"depth": 8, "width": 1024},
}


def spec(net: dict, steps: int) -> dict:
    """One experiment on digits."""
    return {"name": "threads", "net": {"kind": "mlp", **net}, "data": {"name": "digits"},
            "train": {"optimizer": "sgd", "lr": 0.05, "steps": steps, "batch_size": 128}}


def timed(net: dict, steps: int, threads: int) -> float:
    """Wall seconds of one ``gp.run``."""
    start = time.perf_counter()
    gp.run(spec(net, steps), store=":memory:", threads=threads)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {available_cores()} cores, torch "
          f"{torch.__version__}, default threads {torch.get_num_threads()}")
    for label, net in MODELS.items():
        s = load_spec(spec(net, args.steps))
        data = load_data(s.data)
        n_params = parameter_count(build(s.net, data.in_shape, data.n_classes))
        timed(net, 2, 1)  # warm-up
        times: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.rounds):
            for threads in (1, 2) if r % 2 == 0 else (2, 1):
                times[threads].append(timed(net, args.steps, threads))
        one, two = (statistics.median(times[t]) for t in (1, 2))
        print(f"{label}: {n_params} parameters  1 thread {one:.3f} s  2 threads {two:.3f} s  "
              f"2 threads / 1 thread {two / one:.2f}x  policy chooses "
              f"{choose_threads(n_params)}")


if __name__ == "__main__":
    main()
