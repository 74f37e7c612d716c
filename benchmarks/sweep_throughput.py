"""Sweep throughput: the vectorised engine against a plain per-configuration loop.

The workload (issue 6): 64 configurations, MLP depth 10 width 64 tanh on digits, 4 values of
sigma_w2 x 16 seeds, batch 128, 50 SGD steps, probe recording every 10 steps. Measured in
one run on one machine:

* the loop: ``build`` + ``train()`` (with the probe) for each configuration in turn;
* the engine: :func:`gradprobe.sweeps.train_ensemble` on all 64 at once;
* this machine's large-matmul rate (fp32, the best of several 2048^2 (CPU) or 8192^2 (GPU)
  products), and the engine's achieved rate on the model's matmul FLOPs: forward and
  backward of every training step plus the whole-set evaluations it records;
* how throughput grows with the number of configurations (8, 64, 256 by default).

Prints ``speedup X`` and ``fraction_of_matmul_peak Y`` (targets on 2 CPU cores: >= 4 and
>= 0.4; on a GPU, speedup >= 30).

    python benchmarks/sweep_throughput.py                 # CPU, the full benchmark
    python benchmarks/sweep_throughput.py --device cuda
    python benchmarks/sweep_throughput.py --configs 16 --scaling 8 16 --loop-sample 4
    python benchmarks/sweep_throughput.py --threads 1     # one core (a shared machine)
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from gradprobe.data import Dataset, load_data
from gradprobe.nets.plain import build
from gradprobe.spec import ExperimentSpec, load_spec
from gradprobe.sweeps.ensemble import train_ensemble
from gradprobe.train import train

SIGMA_W2 = (0.5, 1.0, 1.5, 2.0)


def workload(n_configs: int, device: str, steps: int = 50) -> list[ExperimentSpec]:
    """``n_configs`` configurations: the 4 sigma_w2 values x n_configs / 4 seeds."""
    seeds = range(max(1, -(-n_configs // len(SIGMA_W2))))
    return [load_spec(config(s2, seed, steps, device)) for seed in seeds
            for s2 in SIGMA_W2][:n_configs]


def config(sigma_w2: float, seed: int, steps: int, device: str) -> dict:
    """One configuration of the workload."""
    return {
        "name": "throughput",
        "net": {"kind": "mlp", "depth": 10, "width": 64, "activation": "tanh",
                "init": {"name": "normal", "sigma_w2": sigma_w2}},
        "data": {"name": "digits"},
        "train": {"optimizer": "sgd", "lr": 0.05, "steps": steps, "batch_size": 128,
                  "record_every": 10, "device": device, "seed": seed},
    }


def model_flops(spec: ExperimentSpec, data: Dataset) -> float:
    """Matmul FLOPs of training one configuration as the engine does it.

    Per step: forward 2*B*in*out per layer, dL/dW the same, dL/d(input) the same for every
    layer but the first. Per evaluation: a forward pass over the train and test sets, at
    init and after every ``eval_every``-th and the last step.
    """
    t = spec.train
    sizes = [data.n_features, *spec.net.hidden_widths(), data.n_classes]
    macs = [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    batch = min(t.batch_size or len(data.x_train), len(data.x_train))
    per_step = 2 * batch * (2 * sum(macs) + sum(macs[1:]))
    evals = 1 + sum(1 for s in range(t.steps) if s % t.eval_every == 0 or s == t.steps - 1)
    per_eval = 2 * (len(data.x_train) + len(data.x_test)) * sum(macs)
    return t.steps * per_step + evals * per_eval


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: str, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of a large square matmul on ``device``."""
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats + 2):
        sync(device)
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - start) / 3)
    return 2 * n**3 / best / 1e9


def time_engine(specs: list[ExperimentSpec], data: Dataset, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    train_ensemble(specs, data, probe=True)
    sync(device)
    return time.perf_counter() - start


def time_loop(specs: list[ExperimentSpec], data: Dataset, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    for spec in specs:
        model = build(spec.net, data.in_shape, data.n_classes, seed=spec.train.seed)
        train(model, data, spec.train, probe=True)
    sync(device)
    return time.perf_counter() - start


def machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads "
            f"(torch {torch.__version__})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--configs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--scaling", type=int, nargs="*", default=[8, 64, 256])
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of each measurement; each figure keeps its best "
                             "(for a shared, noisy machine)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--loop-sample", type=int, default=0,
                        help="time the loop on this many configurations and scale up "
                             "(default: all of them)")
    args = parser.parse_args()
    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)

    specs = workload(args.configs, device, args.steps)
    data = load_data(specs[0].data)
    flops = sum(model_flops(s, data) for s in specs)
    print(f"machine: {machine(device)}")
    print(f"load average at start {os.getloadavg()[0]:.2f}", flush=True)

    time_engine(specs[:4], data, device)  # warm-up: allocator, kernels
    time_loop(specs[:1], data, device)
    sample = specs[: args.loop_sample] if args.loop_sample else specs
    # Interleaved rounds (peak, engine, loop): a shared machine's load drifts, and each
    # figure keeps its best round. The peak is the best of all its measurements, so the
    # fraction is, if anything, understated.
    peaks, engine_runs, loop_runs = [], [], []
    for _ in range(max(1, args.repeats)):
        peaks.append(matmul_peak(device))
        engine_runs.append(time_engine(specs, data, device))
        loop_runs.append(time_loop(sample, data, device) * len(specs) / len(sample))
    peak, engine_s, loop_s = max(peaks), min(engine_runs), min(loop_runs)
    print(f"matmul_peak_gflops {peak:.1f} (rounds: {', '.join(f'{p:.0f}' for p in peaks)})")
    achieved = flops / engine_s / 1e9
    note = f" (timed on {len(sample)}, scaled)" if len(sample) < len(specs) else ""
    print(f"configs {len(specs)}: loop {loop_s:.2f} s{note}, vectorised {engine_s:.2f} s, "
          f"{flops / 1e9:.1f} GFLOP, {achieved:.1f} GFLOP/s (rounds: vectorised "
          f"{', '.join(f'{t:.2f}' for t in engine_runs)} s; loop "
          f"{', '.join(f'{t:.2f}' for t in loop_runs)} s)")
    print(f"speedup {loop_s / engine_s:.2f}")
    print(f"fraction_of_matmul_peak {achieved / peak:.2f}")

    best = lambda fn: min(fn() for _ in range(max(1, args.repeats)))  # noqa: E731
    per_config_loop = loop_s / len(specs)
    for n in args.scaling:
        group = workload(n, device, args.steps)
        seconds = best(lambda group=group: time_engine(group, data, device))
        gflops = sum(model_flops(s, data) for s in group) / seconds / 1e9
        print(f"scaling configs {n:4d}: {seconds:7.2f} s, {n / seconds:7.1f} configs/s, "
              f"{gflops:6.1f} GFLOP/s ({gflops / peak:.2f} of peak), speedup "
              f"{per_config_loop * n / seconds:.1f}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
