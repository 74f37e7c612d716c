"""Repair on a VGG-16-sized CNN: the sequential path against the ensemble, side by side.

The model is the VGG-16-style CNN of ``tests/models/zoo.py`` (13 3x3 convolutions of 8 to
32 channels, 5 max pools, 2 linear layers, PyTorch default init: it vanishes, 10^-6.3),
on 256 random 32x32 RGB images with 5 classes (``tests/models/test_real_models.py``,
docs/your-model.md). ``gp.repair`` runs the baseline and 3 candidates for 30 steps
(SGD lr 0.1, batch 128, seed 0) in each of four variants, interleaved round by round
(the order rotates):

* ``old``: ``ensemble=False, threads=<torch's default>``: the path before issue 16;
* ``sequential``: ``ensemble=False``, threads by the policy (:mod:`gradprobe.threads`);
* ``ensemble, torch threads``: ``ensemble=True, threads=<torch's default>``;
* ``new``: the defaults: ensemble, threads by the policy.

Printed: the median wall time of each, its ratio to ``old``, and where the time of the
last ``old`` and ``new`` runs went (building the changed copies, evidence at
initialisation, training: alone per candidate, or the ensemble as a whole).

    python benchmarks/repair_speed.py --rounds 3
    python benchmarks/repair_speed.py --candidates "init he_normal,batchnorm,lr x10"
    python benchmarks/repair_speed.py --model mlp --steps 150
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.models.zoo

from tests.models.zoo import vgg  # noqa: E402

import gradprobe as gp  # noqa: E402
from gradprobe.diagnosis import repair_runs  # noqa: E402
from gradprobe.diagnosis.repair import CANDIDATES, RNN_CANDIDATES, Candidate  # noqa: E402
from gradprobe.threads import available_cores  # noqa: E402

VGG16 = (8, 8, "M", 16, 16, "M", 16, 16, 16, "M", 32, 32, 32, "M", 32, 32, 32)
repair_module = importlib.import_module("gradprobe.diagnosis.repair")  # not gp.repair
DEFAULT_CANDIDATES = "init he_normal,init orthogonal,lr x10"
ORIGINAL = {"collect_evidence": repair_module.collect_evidence,
            "train_candidates": repair_module.train_candidates,
            "train_run": repair_runs.train_run, "train_ensemble": repair_runs.train_ensemble}


class Clock:
    """Seconds spent per (phase, candidate), filled by the wrappers below."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.current = "baseline"

    def timed(self, phase: str, fn: Callable, who: Callable[..., str] | None = None
              ) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            name = who(*args, **kwargs) if who is not None else self.current
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[(phase, name)] += time.perf_counter() - start
        return wrapper


def instrument(clock: Clock, names: list[str]) -> list[Candidate]:
    """The candidates with timed builds; evidence and training timed by patching."""
    by_name = {c.name: c for c in CANDIDATES + RNN_CANDIDATES}

    def build_of(c: Candidate) -> Callable:
        def build(model: Any, ctx: Any) -> Any:
            clock.current = c.name
            return clock.timed("build", c.build)(model, ctx)
        return build

    alone_names: list[str] = []

    def who_alone(*args: Any, **kwargs: Any) -> str:
        return alone_names.pop(0) if alone_names else "?"

    def who_ensemble(members: list, *args: Any, **kwargs: Any) -> str:
        return f"ensemble of {len(members)}"

    def train_candidates(jobs: list, *args: Any, **kwargs: Any) -> Any:
        keys = [repair_runs.ensemble_key(j) if kwargs.get("ensemble", True) else None
                for j in jobs]
        # those that train alone, in job order (as train_candidates trains them)
        alone_names[:] = [j.name for j, k in zip(jobs, keys, strict=True)
                          if k is None or keys.count(k) == 1]
        return ORIGINAL["train_candidates"](jobs, *args, **kwargs)

    repair_module.collect_evidence = clock.timed("evidence", ORIGINAL["collect_evidence"])
    repair_module.train_candidates = train_candidates
    repair_runs.train_run = clock.timed("train", ORIGINAL["train_run"], who_alone)
    repair_runs.train_ensemble = clock.timed("train", ORIGINAL["train_ensemble"], who_ensemble)
    return [dataclasses.replace(by_name[n], build=build_of(by_name[n])) for n in names]


def problem(kind: str) -> tuple[torch.nn.Module, Any, str]:
    """The model, its data and a label: the VGG-16-style CNN, or (``mlp``) the kind of
    network the playground repairs: a plain tanh MLP, depth 20, width 64, on digits."""
    if kind == "mlp":
        from gradprobe.nets.plain import build
        from gradprobe.spec import NetSpec

        model = build(NetSpec(depth=20, width=64, activation="tanh"), (64,), 10, seed=0)
        return model, "digits", "tanh MLP depth 20 width 64, digits"
    torch.manual_seed(0)
    model = vgg(plan=VGG16)  # 13 convolutions, 2 linear layers
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(256, 3, 32, 32, generator=g), torch.randint(0, 5, (256,), generator=g))
    return model, data, "VGG-16-style CNN, 256 images 3x32x32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--candidates", default=DEFAULT_CANDIDATES)
    parser.add_argument("--variants", default="old,sequential,ensemble torch threads,new")
    parser.add_argument("--model", choices=("vgg", "mlp"), default="vgg")
    args = parser.parse_args()
    torch_threads = torch.get_num_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.processor() or platform.machine()}, {available_cores()} cores, "
          f"torch {torch.__version__}, torch threads {torch_threads}, load {load:.2f}")
    variants = {
        "old": {"ensemble": False, "threads": torch_threads},
        "sequential": {"ensemble": False, "threads": None},
        "ensemble torch threads": {"ensemble": True, "threads": torch_threads},
        "new": {"ensemble": True, "threads": None},
    }
    chosen = [v.strip() for v in args.variants.split(",")]
    names = [n.strip() for n in args.candidates.split(",")]
    model, data, label = problem(args.model)
    clocks: dict[str, Clock] = {}
    times: dict[str, list[float]] = {v: [] for v in chosen}
    results: dict[str, Any] = {}
    gp.repair(model, data, budget_steps=2, candidates=names[:1])  # warm-up (imports)
    for r in range(args.rounds):
        order = chosen[r % len(chosen):] + chosen[: r % len(chosen)]
        for v in order:
            clock = clocks[v] = Clock()
            cands = instrument(clock, names)
            start = time.perf_counter()
            results[v] = gp.repair(model, data, budget_steps=args.steps, candidates=cands,
                                   **variants[v])
            times[v].append(time.perf_counter() - start)
            print(f"  round {r + 1}: {v}: {times[v][-1]:.1f} s", flush=True)
    base = statistics.median(times[chosen[0]])
    print(f"\nrepair, {label}, baseline + {len(names)} "
          f"candidates x {args.steps} steps, {args.rounds} rounds, median:")
    for v in chosen:
        med = statistics.median(times[v])
        print(f"  {v:24s} {med:7.1f} s   {base / med:5.2f}x faster than {chosen[0]}")
    for v in chosen:
        print(f"\nwhere the time went ({v}, last round):")
        for (phase, who), sec in sorted(clocks[v].seconds.items()):
            print(f"  {phase:9s} {who:24s} {sec:6.1f} s")
    pairs = [("new", "sequential"), ("ensemble torch threads", "old")]
    for fast, slow in [(f, s) for f, s in pairs if f in results and s in results]:
        per_round = [b / a for a, b in zip(times[fast], times[slow], strict=True)]
        a, b = (results[v].table.set_index("candidate") for v in (fast, slow))
        worst = max(abs(a.loc[c, "final_loss"] - b.loc[c, "final_loss"])
                    / abs(b.loc[c, "final_loss"]) for c in b.index)
        same = (a.loc[b.index, "verdict"] == b["verdict"]).all()
        print(f"{fast} against {slow} (same threads, ensemble or not): "
              f"{statistics.median(per_round):.2f}x (per round "
              f"{', '.join(f'{x:.2f}' for x in per_round)}); final losses within "
              f"{worst:.1e} relative, verdicts {'the same' if same else 'DIFFERENT'}")

if __name__ == "__main__":
    main()
