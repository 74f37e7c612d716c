"""The main job (``gradprobe demo`` / ``make demo``): gradient vanishing on real data.

A study on scikit-learn's digits, in five sweeps run by the vectorised sweep engine
(:func:`gradprobe.sweep`) and stored in the run store:

* ``depth``: plain sigmoid (Xavier), tanh (Xavier) and ReLU (He) MLPs of 5 to 50 layers,
  measured at initialisation (one step: the gradient of the untrained network);
* ``activations``: one deep MLP with sigmoid, tanh, ReLU, LeakyReLU, ELU, SELU and GELU,
  each with its usual init, trained;
* ``init``: the same deep tanh MLP with weight variance too small, too large, Xavier, He
  and orthogonal, trained;
* ``remedies``: batch normalisation and residual connections on the plain sigmoid
  baseline, trained (ReLU and LeakyReLU come from ``activations``);
* ``adaptive``: autopilot on each sick baseline, and the static remedies the other sweeps
  lack (:mod:`gradprobe.autopilot.study`; trained by the training loop, not the engine).

Then the worst configuration is diagnosed and its candidate repairs verified by training
(:mod:`gradprobe.diagnosis`), the terminal gets a short table of headline numbers, and
``OUT/report.html`` (self-contained, opens offline) gets everything. The report's path is
printed last. ``quick=True`` runs a much smaller study (for tests).

Example:
    >>> result = run_demo(store=":memory:", out=tmp, quick=True)   # doctest: +SKIP
    >>> result.report.name                                          # doctest: +SKIP
    'report.html'
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from gradprobe.autopilot.study import adaptive_sweep
from gradprobe.report.tables import depth_attenuation_table, training_table
from gradprobe.store import Store


@dataclass(frozen=True)
class StudyConfig:
    """Sizes of the study. :data:`FULL` is ``gradprobe demo``; :data:`QUICK` its test size."""

    name: str
    depth: int  # of the trained networks
    width: int
    depths: tuple[int, ...]  # of the depth study
    steps: int
    record_every: int
    eval_every: int
    repair_steps: int
    loss_threshold: float = 1.0  # cross-entropy; the initial loss on 10 classes is ~2.3
    lr: float = 0.05
    batch_size: int = 128

    def sweep_name(self, group: str) -> str:
        """The store's sweep name of one group: ``demo-depth``, ``demo-quick-init``."""
        return f"{self.name}-{group}"


FULL = StudyConfig("demo", depth=30, width=64, depths=(5, 10, 20, 30, 50), steps=300,
                   record_every=15, eval_every=20, repair_steps=150)
QUICK = StudyConfig("demo-quick", depth=8, width=32, depths=(4, 8), steps=40,
                    record_every=10, eval_every=10, repair_steps=20)

#: (activation, init) of the depth study.
DEPTH_NETS = (("sigmoid", "xavier_normal"), ("tanh", "xavier_normal"), ("relu", "he_normal"))
#: Each activation with an init that suits it (ELU and SELU: LeCun, near ELU's critical
#: sigma_w2 = 1; He (sigma_w2 = 2) puts a deep ELU net in the chaotic phase).
ACTIVATION_NETS = (
    ("sigmoid", "xavier_normal"), ("tanh", "xavier_normal"), ("relu", "he_normal"),
    ("leaky_relu", "he_normal"), ("elu", "lecun_normal"), ("selu", "lecun_normal"),
    ("gelu", "he_normal"),
)
#: The inits of the initialisation study (on tanh); tanh + Xavier comes from the
#: activation sweep, and sits between "too large" and He in the study's order.
INITS = (
    {"name": "normal", "sigma_w2": 0.25},  # too small: ordered, vanishing
    {"name": "normal", "sigma_w2": 4.0},  # too large: chaotic
    "he_normal", "orthogonal",
)
INIT_ACTIVATION = "tanh"
BASELINE = ("sigmoid", "xavier_normal")
#: Repair candidates tried on the worst configuration (names in gradprobe.diagnosis).
REPAIR_CANDIDATES = (
    "baseline", "relu + he_normal", "leaky_relu + he_normal", "selu + lecun_normal",
    "init orthogonal", "init critical (theory)", "batchnorm", "residual", "autopilot",
)


def _base(cfg: StudyConfig, steps: int | None = None) -> dict[str, Any]:
    return {
        "net": {"kind": "mlp", "depth": cfg.depth, "width": cfg.width},
        "data": {"name": "digits"},
        "train": {"optimizer": "sgd", "lr": cfg.lr, "steps": cfg.steps if steps is None
                  else steps, "batch_size": cfg.batch_size, "record_every": cfg.record_every,
                  "eval_every": cfg.eval_every, "loss_threshold": cfg.loss_threshold},
    }


def sweep_specs(cfg: StudyConfig) -> dict[str, dict[str, Any]]:
    """The study's four sweep specs, by group."""
    acts, inits = zip(*ACTIVATION_NETS, strict=True)
    d_acts, d_inits = zip(*DEPTH_NETS, strict=True)
    depth_base = _base(cfg, steps=1)
    depth_base["train"]["record_every"] = 1
    return {
        "depth": {"name": cfg.sweep_name("depth"), "base": depth_base,
                  "grid": {"net.depth": list(cfg.depths)},
                  "zip": {"net.activation": list(d_acts), "net.init": list(d_inits)}},
        "activations": {"name": cfg.sweep_name("activations"), "base": _base(cfg),
                        "zip": {"net.activation": list(acts), "net.init": list(inits)}},
        "init": {"name": cfg.sweep_name("init"),
                 "base": _with(_base(cfg), activation=INIT_ACTIVATION),
                 "zip": {"net.init": list(INITS)}},
        "remedies": {"name": cfg.sweep_name("remedies"),
                     "base": _with(_base(cfg), activation=BASELINE[0], init=BASELINE[1]),
                     "zip": {"net.norm": ["batch", "none"], "net.residual": [False, True]}},
        "adaptive": adaptive_sweep(cfg.sweep_name("adaptive"), _base(cfg), BASELINE),
    }


def _with(base: dict[str, Any], **net: Any) -> dict[str, Any]:
    base["net"].update(net)
    return base


@dataclass
class DemoResult:
    """What the study produced: run ids by group, the report's path, headline numbers."""

    run_ids: dict[str, list[str]]
    report: Path
    headline: pd.DataFrame
    diagnosis: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def run_sweeps(cfg: StudyConfig, db: Store, progress: bool,
               console: Console) -> dict[str, list[str]]:
    """Run (or resume) the four sweeps; the run ids of each group, in expansion order."""
    import gradprobe as gp

    ids: dict[str, list[str]] = {}
    for group, spec in sweep_specs(cfg).items():
        started = time.perf_counter()
        table = gp.sweep(spec, store=db, resume=True, progress=progress)
        ids[group] = [str(i) for i in table["run_id"]]
        plan = table.attrs.get("plan", "")
        console.print(f"  {group:<12} {len(ids[group])} runs in "
                      f"{time.perf_counter() - started:.1f} s  {plan}", highlight=False)
    # Configurations the activation sweep already trained are reused, not trained twice.
    shared = _pick(ids["activations"], db, {(INIT_ACTIVATION, "xavier_normal")})
    ids["init"] = ids["init"][:2] + shared + ids["init"][2:]
    ids["remedies"] = _pick(ids["activations"], db, {
        BASELINE, ("relu", "he_normal"), ("leaky_relu", "he_normal")}) + ids["remedies"]
    return ids


def _pick(run_ids: list[str], db: Store, wanted: set[tuple[str, str]]) -> list[str]:
    """The runs among ``run_ids`` whose (activation, init) names are ``wanted``, in order."""
    picked = []
    for run_id in run_ids:
        net = db.run(run_id)["spec"]["net"]
        if (net["activation"]["name"], net["init"]["name"]) in wanted:
            picked.append(run_id)
    return picked


def diagnose_worst(worst: Any, steps: int, console: Console) -> tuple[dict | None,
                                                                    pd.DataFrame | None]:
    """Diagnose the worst configuration (rebuilt at init from its spec) and verify repairs."""
    try:
        from gradprobe.diagnosis import diagnose, repair
    except ImportError:  # the diagnosis package is optional in this build
        return None, None
    from gradprobe.data import load_data
    from gradprobe.nets.plain import build
    from gradprobe.spec import load_spec

    spec = load_spec(worst.spec)
    data = load_data(spec.data)
    model = build(spec.net, data.in_shape, data.n_classes, seed=spec.train.seed)
    diagnosis = diagnose(model, data=data, name=worst.label)
    console.print(f"  diagnosis: {diagnosis.headline()}", highlight=False)
    fixes = repair(model, data=data, budget_steps=steps, lr=spec.train.lr,
                   candidates=list(REPAIR_CANDIDATES))
    console.print(f"  repair: best fix {fixes.best!r} ({len(fixes.table)} candidates, "
                  f"{steps} steps each)", highlight=False)
    return {**diagnosis.to_dict(), "repair": fixes.to_dict()}, fixes.table


def classics_chapter(directory: Path, console: Console) -> list[Any]:
    """Run the quick reproductions, store them in ``directory``; the report's sections."""
    from gradprobe.report.classics import classics_sections
    from gradprobe.reproduce.runner import run_quick_classics

    console.print("classic results (gradprobe reproduce NAME --quick):", highlight=False)
    return classics_sections(run_quick_classics(directory, console))


def run_demo(
    store: str | Path | None = None,
    out: Path = Path("reports"),
    quick: bool = False,
    console: Console | None = None,
) -> DemoResult:
    """Run the study, print its headline tables, write the report; print its path last."""
    import torch

    console = console or Console()
    cfg = QUICK if quick else FULL
    threads = torch.get_num_threads()
    # Width-64 nets: a thread pool costs more than it brings (and under load far more).
    torch.set_num_threads(1)
    try:
        return _study(cfg, store, Path(out), quick, console)
    finally:
        torch.set_num_threads(threads)


def _study(cfg: StudyConfig, store: str | Path | None, out: Path, quick: bool,
           console: Console) -> DemoResult:
    from gradprobe.app.study import study_report, worst_configuration
    from gradprobe.report.data import headline_frame, load_records
    from gradprobe.report.html import write_html
    from gradprobe.report.theory_data import depth_frame

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    console.print(f"gradprobe demo{' (quick)' if quick else ''}: gradient vanishing on "
                  f"digits, {cfg.depth}-layer nets, {cfg.steps} SGD steps", highlight=False)
    with Store(store) as db:
        ids = run_sweeps(cfg, db, progress=console.is_terminal, console=console)
        seconds["sweeps"] = time.perf_counter() - started
        groups = {g: load_records(db, runs=ids[g]) for g in ("depth", "activations", "init",
                                                              "remedies", "adaptive")}
        store_path = db.path
    trained = list({r.id: r for g in ("activations", "init", "remedies")
                    for r in groups[g]}.values())
    worst = worst_configuration(trained)
    diagnosis = repair_table = None
    if worst is not None:
        t0 = time.perf_counter()
        diagnosis, repair_table = diagnose_worst(worst, cfg.repair_steps, console)
        seconds["diagnosis"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = study_report(
        groups, diagnosis, repair_table, worst.label if worst else None,
        subtitle=f"{cfg.depth}-layer MLPs of width {cfg.width}, {cfg.steps} steps of SGD "
        f"(lr {cfg.lr}) on digits; store {store_path}",
        chance=0.1,
    )
    if not quick:  # Classic results: every `gradprobe reproduce NAME --quick` (reproduce/)
        t0 = time.perf_counter()
        report.sections += classics_chapter(out / "reproductions", console)
        seconds["classics"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    if diagnosis is not None:
        (out / "diagnosis.json").write_text(json.dumps(diagnosis, indent=1, default=str))
    path = write_html(report, out / "report.html")
    seconds["report"] = time.perf_counter() - t0
    headline = headline_frame(trained)
    depths, _ = depth_frame(groups["depth"])
    console.print(depth_attenuation_table(depths))
    console.print(training_table(headline))
    seconds["total"] = time.perf_counter() - started
    console.print(f"full record: {store_path} (gradprobe runs --store {store_path}); "
                  f"{seconds['total']:.0f} s", highlight=False, soft_wrap=True)
    console.print(f"report: {path}", highlight=False, soft_wrap=True)
    return DemoResult(ids, path, headline, diagnosis, seconds)
