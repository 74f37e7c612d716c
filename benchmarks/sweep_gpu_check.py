"""GPU check of the vectorised sweep engine (finishes in well under 3 minutes).

1. Equivalence on CUDA: a few configurations (mixed activations, inits, learning rates,
   seeds, one that diverges) trained as one batched network on the GPU against each
   trained alone with ``train()`` and the real probe on the GPU: every metric row.
2. Throughput at reduced size: 32 configurations of the benchmark workload, vectorised
   vs the plain per-configuration loop, on the GPU; prints ``speedup X`` (target >= 30).

    python benchmarks/sweep_gpu_check.py
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from gradprobe.data import load_data
from gradprobe.nets.plain import build
from gradprobe.spec import apply_overrides, load_spec
from gradprobe.sweeps.ensemble import train_ensemble
from gradprobe.train import train

KEYS = ["step", "layer", "depth", "quantity"]
FRACTIONS = ("saturated_fraction", "inactive_fraction", "dead_unit_fraction",
             "train_accuracy", "test_accuracy")
BASE = {
    "net": {"kind": "mlp", "depth": 6, "width": 32, "activation": "tanh"},
    "data": {"name": "digits"},
    "train": {"steps": 20, "batch_size": 64, "record_every": 5, "eval_every": 7,
              "device": "cuda"},
}
MEMBERS = [
    {"train.seed": 0},
    {"net.activation": "relu", "net.init": "he_normal", "train.seed": 1, "train.lr": 0.1},
    {"net.activation": "sigmoid", "train.seed": 2},
    {"net.activation": "gelu", "net.init": {"name": "normal", "sigma_w2": 2.0}},
    {"net.activation": "relu", "net.init": {"name": "normal", "sigma_w2": 40.0},
     "train.lr": 50.0},  # diverges
]


def check_equivalence() -> bool:
    specs = [load_spec(apply_overrides(BASE, m)) for m in MEMBERS]
    data = load_data(specs[0].data)
    results = train_ensemble(specs, data)
    ok = True
    for spec, got in zip(specs, results, strict=True):
        model = build(spec.net, data.in_shape, data.n_classes, seed=spec.train.seed)
        ref = train(model, data, spec.train, probe=True)
        a, b = ref.metrics.reset_index(drop=True), got.metrics.reset_index(drop=True)
        same_rows = len(a) == len(b) and (a[KEYS].to_numpy() == b[KEYS].to_numpy()).all()
        frac = a["quantity"].isin(FRACTIONS).to_numpy() if same_rows else None
        close = same_rows and np.allclose(
            b["value"][~frac], a["value"][~frac], rtol=2e-4, atol=1e-6, equal_nan=True
        ) and np.allclose(b["value"][frac], a["value"][frac], atol=0.01, equal_nan=True)
        status = ref.status == got.status
        worst = (float(((a["value"] - b["value"]).abs() / (a["value"].abs() + 1e-6)).max())
                 if same_rows else float("nan"))
        print(f"  {spec.net.activation.label():8s} {spec.net.init.label():22s} "
              f"{ref.status:9s} rows {len(a)}/{len(b)} max rel diff {worst:.2e} "
              f"{'OK' if same_rows and close and status else 'MISMATCH'}")
        ok &= bool(same_rows and close and status)
    return ok


def throughput(n_configs: int = 32, loop_sample: int = 8) -> float:
    sys.path.insert(0, "benchmarks")
    from sweep_throughput import model_flops, workload

    specs = workload(n_configs, "cuda")
    data = load_data(specs[0].data)
    train_ensemble(specs[:2], data)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    train_ensemble(specs, data)
    torch.cuda.synchronize()
    engine_s = time.perf_counter() - start
    start = time.perf_counter()
    for spec in specs[:loop_sample]:
        train(build(spec.net, data.in_shape, data.n_classes, seed=spec.train.seed), data,
              spec.train, probe=True)
    torch.cuda.synchronize()
    loop_s = (time.perf_counter() - start) * n_configs / loop_sample
    gflops = sum(model_flops(s, data) for s in specs) / engine_s / 1e9
    print(f"  {n_configs} configs: loop {loop_s:.2f} s (timed on {loop_sample}, scaled), "
          f"vectorised {engine_s:.2f} s, {gflops:.1f} GFLOP/s")
    speedup = loop_s / engine_s
    print(f"speedup {speedup:.1f}")
    return speedup


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check is for a GPU machine")
    print(f"device: {torch.cuda.get_device_name()} (torch {torch.__version__})")
    started = time.perf_counter()
    print("equivalence (vectorised vs alone, on CUDA):")
    ok = check_equivalence()
    print("equivalence", "OK" if ok else "FAILED")
    print("throughput (reduced size):")
    throughput()
    print(f"total {time.perf_counter() - started:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
