"""The vectorised engine against each configuration trained alone with ``train()`` + Probe.

The reference is independent of the engine: nn.Modules, autograd, torch.optim and the
probe's hooks. Each problem is a group of configurations that share layer shapes but
differ in what the engine must keep apart per member.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from sweep_helpers import alone, assert_same_result, small

from gradprobe.data import load_data
from gradprobe.nets.plain import build
from gradprobe.spec import load_spec
from gradprobe.sweeps.ensemble import group_key, train_ensemble, unsupported_reason
from gradprobe.sweeps.stacked import StackedMLP


@dataclass
class Group:
    id: str
    base: dict
    members: list[dict]  # dotted overrides per member


GROUPS = [
    Group("activations-inits-lrs-seeds", small(), [
        {"net.activation": "tanh", "train.seed": 0},
        {"net.activation": "relu", "net.init": "he_normal", "train.seed": 1, "train.lr": 0.1},
        {"net.activation": "sigmoid", "net.init": "orthogonal", "train.seed": 2},
        {"net.activation": {"name": "leaky_relu", "slope": 0.1}, "train.seed": 0},
        {"net.activation": "gelu", "net.bias_init": {"name": "normal", "sigma_b2": 0.1}},
        {"net.activation": "tanh", "net.init": {"name": "normal", "sigma_w2": 3.0},
         "train.lr": 0.02},
    ]),
    Group("more-activations-full-batch", small(**{"net.depth": 3, "train.batch_size": None,
                                                  "train.steps": 6}), [
        {"net.activation": a} for a in ("softplus", "hardtanh", "erf", "selu", "silu",
                                         "linear", {"name": "elu", "alpha": 0.5})
    ]),
    Group("momentum-mse", small(**{"train.optimizer": "momentum", "train.loss": "mse",
                                   "train.lr": 0.02}), [
        {"train.seed": 0}, {"train.seed": 1, "train.momentum": 0.5},
        {"net.activation": "relu", "net.init": "he_uniform"},
    ]),
    Group("one-diverges", small(**{"train.steps": 30, "train.record_every": 3}), [
        {"net.activation": "relu", "net.init": {"name": "normal", "sigma_w2": 40.0},
         "train.lr": 50.0},
        {"train.lr": 0.1},
        {"net.activation": "relu", "net.init": {"name": "normal", "sigma_w2": 40.0},
         "train.lr": 5.0, "train.seed": 3},
    ]),
    Group("digits-width-list-no-test-set", small(**{
        "net.depth": 3, "net.width": [32, 8], "data.name": "digits", "data.test_fraction": 0.0,
        "train.steps": 5, "train.record_every": 2}), [
        {"train.seed": 0}, {"net.activation": "relu", "train.seed": 1},
    ]),
    Group("depth-1", small(**{"net.depth": 1, "train.steps": 4}), [
        {"train.seed": 0}, {"train.seed": 1, "train.lr": 0.2},
    ]),
    Group("zero-steps", small(**{"train.steps": 0}), [{"train.seed": 0}, {"train.seed": 5}]),
    # every compiled activation kernel (gradprobe.native.activations) beside torch's paths:
    # a leaky ReLU with a negative slope (phi' not readable from the output) and gelu
    Group("activation-kernels", small(**{"net.width": 24, "train.batch_size": 48}), [
        {"net.activation": "relu", "train.seed": 0},
        {"net.activation": "relu", "net.init": "he_normal", "train.seed": 1},
        {"net.activation": "leaky_relu", "net.init": "he_normal", "train.seed": 2},
        {"net.activation": {"name": "leaky_relu", "slope": 0.3}, "train.seed": 3},
        {"net.activation": {"name": "leaky_relu", "slope": -0.2}, "train.seed": 4},
        {"net.activation": "sigmoid", "net.init": "xavier_normal", "train.seed": 5},
        {"net.activation": "sigmoid", "net.init": {"name": "normal", "sigma_w2": 6.0}},
        {"net.activation": "gelu", "train.seed": 6},
        {"net.activation": "tanh", "train.seed": 7},
    ]),
]


@pytest.mark.filterwarnings("ignore:gradprobe. step .* was captured")  # train() on divergence
@pytest.mark.parametrize("group", GROUPS, ids=[g.id for g in GROUPS])
def test_every_member_matches_training_alone(group: Group) -> None:
    specs = [load_spec(group.base, m) for m in group.members]
    results = train_ensemble(specs, load_data(specs[0].data))
    for spec, got in zip(specs, results, strict=True):
        assert_same_result(alone(spec), got)


def test_members_match_training_alone_on_torchs_activation_path(monkeypatch) -> None:
    """Without the compiled kernels (no C compiler): torch's ops in the engine instead."""
    from gradprobe.native import activations

    monkeypatch.setattr(activations, "load", lambda: None)
    group = next(g for g in GROUPS if g.id == "activation-kernels")
    specs = [load_spec(group.base, m) for m in group.members]
    stack = StackedMLP.from_specs([s.net for s in specs[:1]], [0], 4, 3)
    assert stack.segments[0].kernel  # the kernel's entry points, each taking torch's path
    for spec, got in zip(specs, train_ensemble(specs, load_data(specs[0].data)), strict=True):
        assert_same_result(alone(spec), got)


def test_divergence_is_per_member() -> None:
    group = next(g for g in GROUPS if g.id == "one-diverges")
    specs = [load_spec(group.base, m) for m in group.members]
    results = train_ensemble(specs, load_data(specs[0].data))
    assert [r.status for r in results] == ["diverged", "complete", "diverged"]
    assert results[1].summary["steps_run"] == 30
    assert results[0].summary["steps_run"] < 30


def test_member_results_do_not_depend_on_the_group() -> None:
    specs = [load_spec(small(), {"train.seed": s, "net.activation": a})
             for s, a in [(0, "tanh"), (1, "relu"), (2, "tanh")]]
    data = load_data(specs[0].data)
    together = train_ensemble(specs, data)
    by_itself = train_ensemble([specs[1]], data)[0]
    assert_same_result(together[1], by_itself)


def test_without_probe_only_network_rows() -> None:
    spec = load_spec(small())
    got = train_ensemble([spec], load_data(spec.data), probe=False)[0]
    assert_same_result(alone(spec, probe=False), got)


def test_progress_callback_once_per_step() -> None:
    specs = [load_spec(small(), {"train.seed": s}) for s in (0, 1)]
    calls: list[tuple[int, int]] = []
    train_ensemble(specs, load_data(specs[0].data), on_step=lambda s, n: calls.append((s, n)))
    assert calls == [(s, 2) for s in range(12)]


def test_a_group_too_big_for_memory_trains_in_parts(monkeypatch) -> None:
    from gradprobe.sweeps import ensemble

    specs = [load_spec(small(), {"train.seed": s, "net.activation": a})
             for s, a in [(0, "tanh"), (1, "relu"), (2, "tanh")]]
    data = load_data(specs[0].data)
    whole = train_ensemble(specs, data)
    monkeypatch.setattr(ensemble, "CPU_MEMORY_BUDGET",
                        ensemble.member_bytes(specs[0], data) * 1.5)  # one member per part
    calls: list[tuple[int, int]] = []
    parts = train_ensemble(specs, data, on_step=lambda s, n: calls.append((s, n)))
    assert len(calls) == 3 * 12 and {n for _, n in calls} == {1}
    for a, b in zip(whole, parts, strict=True):
        assert_same_result(a, b)


@pytest.mark.parametrize("override, reason", [
    ({"net.norm": "batch"}, "batch norm"),
    ({"net.norm": "layer"}, "layer norm"),
    ({"net.residual": True}, "residual connections"),
    ({"train.optimizer": "adam"}, "the adam optimizer"),
    ({"net.kind": "cnn", "data.name": "digits"}, "cnn networks"),
])
def test_unsupported_configurations_are_named(override: dict, reason: str) -> None:
    spec = load_spec(small(), override)
    assert unsupported_reason(spec) == reason
    with pytest.raises(ValueError, match=reason):
        train_ensemble([spec], load_data(spec.data))


def test_group_key_separates_shapes_and_schedules_only() -> None:
    base = load_spec(small())
    same = load_spec(small(), {"net.activation": "relu", "net.init": "he_normal",
                               "train.lr": 0.3, "train.seed": 9, "train.momentum": 0.5})
    assert group_key(base) == group_key(same)
    for override in ({"net.width": 8}, {"net.depth": 5}, {"train.steps": 3},
                     {"train.batch_size": 16}, {"data.name": "wine"}, {"train.loss": "mse"}):
        assert group_key(load_spec(small(), override)) != group_key(base), override
    mixed = [base, load_spec(small(), {"net.width": 8})]
    with pytest.raises(ValueError, match="share layer shapes"):
        train_ensemble(mixed, load_data(base.data))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_members_match_training_alone_on_cuda() -> None:
    specs = [load_spec(small(), {"train.device": "cuda", "train.seed": s}) for s in (0, 1)]
    results = train_ensemble(specs, load_data(specs[0].data))
    for spec, got in zip(specs, results, strict=True):
        assert_same_result(alone(spec), got)


def test_stacked_init_is_builds_init_bitwise() -> None:
    nets = [load_spec(small(), o).net for o in (
        {"net.init": "orthogonal", "net.bias_init": {"name": "normal", "sigma_b2": 0.2}},
        {"net.init": "xavier_uniform", "net.bias_init": "pytorch_default"},
        {"net.init": {"name": "normal", "sigma_w2": 2.0}},
    )]
    seeds = [3, 0, 7]
    stacked = StackedMLP.from_specs(nets, seeds, in_features=4, n_outputs=3)
    labels = [(n.activation.label(), n.activation.name) for n in nets]
    built = StackedMLP.from_models([build(n, (4,), 3, seed=s) for n, s in
                                    zip(nets, seeds, strict=True)], labels)
    for a, b in zip(stacked.parameters(), built.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def _eight_members() -> list:
    return [load_spec(small(), {"train.seed": s % 3, "net.activation": a})
            for s, a in enumerate(["tanh", "relu", "sigmoid", "tanh"] * 2)]


def test_cpu_engines_side_by_side_match_one_engine(two_threads, monkeypatch) -> None:
    from gradprobe.sweeps import ensemble

    monkeypatch.setattr(ensemble, "MIN_MEMBERS_PER_WORKER", 4)  # two engines of four
    specs = _eight_members()
    data = load_data(specs[0].data)
    assert ensemble.cpu_workers(torch.device("cpu"), len(specs)) == 2
    calls: list[tuple[int, int]] = []
    side_by_side = train_ensemble(specs, data, on_step=lambda s, n: calls.append((s, n)))
    assert torch.get_num_threads() == 2  # restored
    steps = specs[0].train.steps
    assert len(calls) == 2 * steps and sum(n for _, n in calls) == len(specs) * steps
    monkeypatch.setattr(ensemble, "MIN_MEMBERS_PER_WORKER", 10**6)  # one engine
    assert ensemble.cpu_workers(torch.device("cpu"), len(specs)) == 1
    together = train_ensemble(specs, data)
    for a, b in zip(together, side_by_side, strict=True):
        assert_same_result(a, b)
    for spec, got in zip(specs[:3], side_by_side, strict=False):
        assert_same_result(alone(spec), got)


def test_a_failing_part_stops_the_others(two_threads, monkeypatch) -> None:
    from gradprobe.sweeps import ensemble

    monkeypatch.setattr(ensemble, "MIN_MEMBERS_PER_WORKER", 4)
    specs = _eight_members()
    data = load_data(specs[0].data)
    started: list[int] = []
    real_run = ensemble._Engine.run

    def run(self, on_step, stop=None):
        started.append(self.n)
        if len(started) == 1:
            raise RuntimeError("part failed")
        real_run(self, on_step, stop)

    monkeypatch.setattr(ensemble._Engine, "run", run)
    with pytest.raises(RuntimeError, match="part failed"):
        train_ensemble(specs, data)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("n, workers, budget_members, sizes", [
    (64, 2, 10**6, [32, 32]),
    (9, 2, 10**6, [4, 5]),  # near-equal
    (10, 2, 4, [2, 1, 2, 2, 1, 2]),  # two at a time within 4 members: at most 2 each
    (5, 1, 2, [2, 1, 2]),
])
def test_split_members_near_equal_parts_within_budget(n, workers, budget_members, sizes,
                                                      monkeypatch) -> None:
    from gradprobe.sweeps import ensemble

    specs = [load_spec(small(), {"train.seed": s}) for s in range(n)]
    data = load_data(specs[0].data)
    monkeypatch.setattr(ensemble, "CPU_MEMORY_BUDGET",
                        ensemble.member_bytes(specs[0], data) * budget_members)
    parts = ensemble.split_members(specs, data, torch.device("cpu"), workers)
    assert [len(p) for p in parts] == sizes
    assert [s for p in parts for s in p] == specs  # contiguous, in order
