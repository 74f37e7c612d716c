"""Store writes as a share of sweep time (issue 16: at most 5 %).

The case: 4 activations x 4 inits x 4 seeds (64 configurations), MLP depth 10 width 64 on
digits, 50 SGD steps, through the public ``gp.sweep`` into a SQLite store file. Three ways
of storing, interleaved round by round in one run (the order alternates):

* ``background``: the sweep as it is: each finished configuration goes to the store
  writer's thread (:mod:`gradprobe.sweeps.writer`) while the engine builds the next
  results or trains the next group;
* ``inline``: the same writes on the driver's thread as each configuration is submitted
  (``gradprobe.sweeps.writer.BACKGROUND = False``), as before the writer thread;
* ``none``: nothing stored (the runner's write replaced by a stub): the sweep's time
  without the store, for the difference.

Per sweep it measures the time inside :meth:`Store.write_run` (row building, inserts,
commit: the store's work, on whichever thread) and the time the driver waits for the
store: the whole write for ``inline``, and for ``background`` the wait in
:meth:`StoreWriter.close` for what was not written yet. The share of sweep time is that
wait over the sweep's wall time; the difference against ``none`` is printed beside it.

    python benchmarks/store_writes.py --rounds 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from sweep_mixed import sweep_spec  # the case (this folder)

import gradprobe as gp
from gradprobe.sweeps import runner as runner_module
from gradprobe.sweeps import writer as writer_module


class Timers:
    """Patches in place for one sweep: time inside write_run, and the driver's wait."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.work = 0.0
        self.wait = 0.0

    def __enter__(self) -> Timers:
        self.saved = (gp.Store.write_run, writer_module.StoreWriter.close,
                      writer_module.BACKGROUND, runner_module._write)
        write_run, close, _, write = self.saved

        def timed_write_run(store: gp.Store, *args: Any, **kwargs: Any) -> str:
            start = time.perf_counter()
            try:
                return write_run(store, *args, **kwargs)
            finally:
                self.work += time.perf_counter() - start

        def timed_close(writer: writer_module.StoreWriter) -> None:
            start = time.perf_counter()
            try:
                close(writer)
            finally:
                self.wait += time.perf_counter() - start

        gp.Store.write_run = timed_write_run  # type: ignore[method-assign]
        writer_module.StoreWriter.close = timed_close  # type: ignore[method-assign]
        writer_module.BACKGROUND = self.variant == "background"
        if self.variant == "none":
            runner_module._write = lambda db, name, config, outcome: {"run_id": None}
        return self

    def __exit__(self, *exc: object) -> None:
        (gp.Store.write_run, writer_module.StoreWriter.close, writer_module.BACKGROUND,
         runner_module._write) = self.saved
        if self.variant == "inline":  # every write happened on the driver's thread
            self.wait += self.work


def timed_sweep(path: Path, steps: int, variant: str) -> tuple[float, float, float]:
    """(sweep seconds, seconds inside write_run, seconds the driver waited for the store)."""
    with Timers(variant) as timers:
        start = time.perf_counter()
        gp.sweep(sweep_spec("case", steps), store=path)
        total = time.perf_counter() - start
    return total, timers.work, timers.wait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    variants = ["background", "inline", "none"]
    sweeps: dict[str, list[float]] = {k: [] for k in variants}
    shares: dict[str, list[float]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        gp.sweep(sweep_spec("warmup", 2), store=Path(tmp) / "warm.sqlite")
        for r in range(args.rounds):
            for label in variants if r % 2 == 0 else variants[::-1]:
                total, work, wait = timed_sweep(Path(tmp) / f"{label}{r}.sqlite", args.steps,
                                                label)
                sweeps[label].append(total)
                shares[label].append(wait / total)
                print(f"round {r} {label:10s} sweep {total:6.2f} s  store work {work:5.3f} s"
                      f"  driver waited {wait:5.3f} s ({100 * wait / total:4.1f} %)", flush=True)
    print(f"machine: {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    med = {k: statistics.median(v) for k, v in sweeps.items()}
    for label in ("background", "inline"):
        share = statistics.median(shares[label])
        print(f"{label:10s}: sweep {med[label]:.2f} s, store share (driver's wait, median) "
              f"{100 * share:.1f} %, sweep minus no-store sweep "
              f"{100 * (med[label] - med['none']) / med[label]:+.1f} %")
    best = statistics.median(shares["background"])
    print(f"no store: sweep {med['none']:.2f} s;  target <= 5 %: "
          f"{'met' if best <= 0.05 else 'NOT met'} ({100 * best:.1f} %)")


if __name__ == "__main__":
    main()
