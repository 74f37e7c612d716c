"""The main job (``gradprobe demo`` / ``make demo``): gradient vanishing on real data.

First version: on scikit-learn's digits, a 20-layer plain sigmoid network beside a 20-layer
plain ReLU network with He init; per-layer weight-gradient norms at init and after training,
and the accuracy each reached.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from gradprobe.api import RunResult, run
from gradprobe.report.tables import fmt, run_table
from gradprobe.store import Store

DEMO_NETS = {
    "sigmoid": {"activation": "sigmoid", "init": "xavier_normal"},
    "relu_he": {"activation": "relu", "init": "he_normal"},
}


def demo_spec(name: str, depth: int, steps: int) -> dict:
    """The spec of one demo network on digits."""
    return {
        "name": f"demo-{name}",
        "net": {"kind": "mlp", "depth": depth, "width": 64, **DEMO_NETS[name]},
        "data": {"name": "digits"},
        "train": {"optimizer": "sgd", "lr": 0.05, "steps": steps, "batch_size": 128,
                  "record_every": 25, "eval_every": 50},
    }


def gradient_comparison(results: dict[str, RunResult]) -> Table:
    """Weight-gradient norm per layer, at init and at the end, for each network."""
    table = Table(title="weight-gradient norm per layer (depth 1 = input side)",
                  title_justify="left")
    table.add_column("depth", justify="right")
    series = {}
    for name, result in results.items():
        frame = result.frame()
        grads = frame[frame["quantity"] == "weight_grad_norm"]
        first, last = grads["step"].min(), grads["step"].max()
        for label, step in (("init", first), ("trained", last)):
            table.add_column(f"{name} @{label}", justify="right")
            series[(name, label)] = grads[grads["step"] == step].set_index("depth")["value"]
    depths = sorted(set().union(*(s.index for s in series.values())))
    for depth in depths:
        table.add_row(str(depth), *(fmt(s.get(depth)) for s in series.values()))
    return table


def run_demo(
    store: str | Path | None = None,
    out: Path = Path("reports"),
    quick: bool = False,
    console: Console | None = None,
) -> dict[str, RunResult]:
    """Run the study, print its tables, and return the runs by name."""
    console = console or Console()
    depth, steps = (8, 30) if quick else (20, 400)
    results: dict[str, RunResult] = {}
    with Store(store) as db:
        for name in DEMO_NETS:
            console.print(f"training {depth}-layer {name} on digits ({steps} SGD steps)")
            results[name] = run(demo_spec(name, depth, steps), store=db, progress=True)
    console.print(gradient_comparison(results))
    console.print(run_table(
        [r.summary | {"run_id": r.run_id, "status": r.status, "name": r.spec.net.describe()}
         for r in results.values()],
        title="what each network learned",
    ))
    console.print(f"runs stored in {Path(store) if store else 'runs/gradprobe.sqlite'}")
    return results
