"""Time the playground's theory update on a control change (budget: under 100 ms).

Run: ``python benchmarks/theory_update.py [--repeat 5]``. For every activation it times,
side by side in one run, the panel's update as the page gets it (``POST /api/theory``
through the ASGI app: validation, theory, JSON), once with the activation's phase diagram
not yet computed (cold: the first visit of an activation before the server's warm-up ends)
then with it cached (warm: a new depth each time, as every later change, and every change
once ``gradprobe serve`` has warmed up), and for a change of a training control only (the
panel itself is cached then). Prints the best of ``repeat`` and the ratio to the budget; the
warm update's CPU time beside its wall time shows what a machine shared with other jobs
adds.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

BUDGET_MS = 100.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="best of this many updates")
    parser.add_argument("--depth", type=int, default=30)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

    from gradprobe.nets.activations import activation_names
    from gradprobe.serve import create_app
    from gradprobe.serve.theory_panel import _panel, diagram

    client = TestClient(create_app(store=":memory:", max_running=1))
    client.post("/api/theory", json={"depth": 3})  # imports, data load, first-call costs out

    def timed(config: dict) -> tuple[float, float]:
        """(wall ms, CPU ms of this process: what an idle machine's wall time would be)."""
        start, cpu = time.perf_counter(), time.process_time()
        response = client.post("/api/theory", json=config)
        assert response.status_code == 200, response.text
        return 1000 * (time.perf_counter() - start), 1000 * (time.process_time() - cpu)

    def update(config: dict) -> float:
        return timed(config)[0]

    print(f"theory update (POST /api/theory, depth {args.depth}, width 64, digits), "
          f"best of {args.repeat}; budget {BUDGET_MS:.0f} ms; {os.cpu_count()} CPUs")
    print(f"{'activation':<11} {'cold ms':>8} {'warm ms':>8} {'warm cpu ms':>12} "
          f"{'warm x budget':>14} {'cold / warm':>12} {'lr change ms':>13}")
    worst = 0.0
    for name in activation_names():
        diagram.cache_clear()
        cold = update({"depth": args.depth, "activation": name})
        warm, warm_cpu = min(timed({"depth": args.depth + 1 + i, "activation": name})
                             for i in range(args.repeat))  # a new network: no panel cached
        _panel.cache_clear()
        same = min(update({"depth": args.depth, "activation": name, "lr": 0.01 * (i + 1)})
                   for i in range(args.repeat))  # training controls: the panel is cached
        worst = max(worst, warm)
        print(f"{name:<11} {cold:8.1f} {warm:8.1f} {warm_cpu:12.1f} {warm / BUDGET_MS:14.2f} "
              f"{cold / warm:12.1f} {same:13.1f}")
    print(f"slowest warm update: {worst:.1f} ms = {worst / BUDGET_MS:.2f} x the budget "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
