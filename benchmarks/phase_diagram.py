"""Time a 200 x 200 mean-field phase diagram per activation (budget: under 1 s each).

Run: ``python benchmarks/phase_diagram.py [--n 200] [--repeat 3]``. Prints the best of
``repeat`` wall times per activation, the critical line's time, and the ratio to the budget.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from gradprobe.theory import critical_sigma_w2, phase_diagram

BUDGET_S = 1.0
ACTIVATIONS = ["tanh", "relu", "erf", "sigmoid", "hardtanh", "gelu", "selu", "softplus"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="grid points per axis")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    sw = np.linspace(0.05, 4.0, args.n)
    sb = np.linspace(0.0, 0.5, args.n)
    phase_diagram("tanh", sw[:10], sb[:10])  # imports and first-call costs out of the timing
    print(f"{args.n}x{args.n} phase diagram (q*, chi1, status, critical line), best of "
          f"{args.repeat}; budget {BUDGET_S:.1f} s")
    print(f"{'activation':<10} {'grid s':>8} {'x budget':>9} {'critical_sigma_w2 (50) s':>25}")
    for name in ACTIVATIONS:
        best = min(phase_diagram(name, sw, sb).seconds for _ in range(args.repeat))
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gelu's jump warning
            critical_sigma_w2(name, np.linspace(0.0, 0.5, 50))
        crit = time.perf_counter() - start
        print(f"{name:<10} {best:8.3f} {best / BUDGET_S:9.2f} {crit:25.3f}")


if __name__ == "__main__":
    main()
