"""Repair's ensemble: every member's run equals its run alone with ``train_run``.

The reference is the one training loop, ``gradprobe.train.train`` (through ``train_run``),
run on each member separately with the same settings. Settings are non-chaotic (small
learning rates, 10 steps), so float rounding stays far below the tolerance on every CPU.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import gradprobe as gp
from gradprobe.diagnosis import repair_runs
from gradprobe.diagnosis.inputs import resolve_problem
from gradprobe.diagnosis.recurrent_fixes import ClipGradNorm
from gradprobe.diagnosis.repair_ensemble import Member, signature, train_ensemble
from gradprobe.diagnosis.training import train_run
from gradprobe.errors import UserError
from gradprobe.nets.plain import build
from gradprobe.spec import NetSpec

STEPS = 10
REL = 1e-5


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 16, 3))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                         nn.Linear(32, 3))


def images(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def assert_same_run(got, want) -> None:
    """A member's TrainingRun against the same run trained alone."""
    assert got.status == want.status and got.steps == want.steps
    assert got.diverged_at_step == want.diverged_at_step
    for a, b in zip(got.losses, want.losses, strict=True):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=REL)
    for name in ("initial_loss", "final_loss", "first_loss", "max_smoothed_loss"):
        assert getattr(got, name) == pytest.approx(getattr(want, name), rel=REL, nan_ok=True)
    for name in ("final_train_accuracy", "final_test_accuracy", "initial_accuracy"):
        assert getattr(got, name) == pytest.approx(getattr(want, name), abs=1e-6, nan_ok=True)
    assert got.stalled == want.stalled and got.steps_to_threshold == want.steps_to_threshold
    assert (got.lr, got.optimizer, got.batch_size) == (want.lr, want.optimizer, want.batch_size)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("make, data", [(cnn, images()),
                                        (mlp, (images()[0].flatten(1), images()[1]))],
                         ids=["cnn", "mlp"])
def test_every_member_equals_its_run_alone(make, data, optimizer):
    torch.manual_seed(0)
    problem = resolve_problem(data)
    scale = 0.1 if optimizer == "adam" else 1.0
    # (model, lr, clip): two inits, a larger lr, and clipping tight enough to act
    nets = [make(), make(), make()]
    settings = [(nets[0], 0.05, None), (nets[1], 0.05, None), (nets[0], 0.2, None),
                (nets[0], 0.05, 0.02)]
    members = [Member(copy.deepcopy(n), lr * scale, clip) for n, lr, clip in settings]
    runs = train_ensemble(members, problem, steps=STEPS, optimizer=optimizer, batch_size=32)
    for (net, lr, clip), got in zip(settings, runs, strict=True):
        want = train_run(copy.deepcopy(net), problem, steps=STEPS, lr=lr * scale,
                         optimizer=optimizer, batch_size=32,
                         callbacks=[ClipGradNorm(clip)] if clip else [])
        assert_same_run(got, want)
    if optimizer != "adam":  # (Adam's steps hardly change when a gradient is scaled)
        # the clip acted: the clipped member is not the unclipped one with the same lr
        assert runs[3].losses[-1] != pytest.approx(runs[0].losses[-1], rel=1e-3)


def test_a_diverging_member_stops_alone_and_the_others_go_on():
    torch.manual_seed(0)
    problem = resolve_problem((images()[0].flatten(1), images()[1]))
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                        nn.Linear(32, 3))
    lrs = [0.05, 1e12]
    runs = train_ensemble([Member(copy.deepcopy(net), lr) for lr in lrs], problem,
                          steps=STEPS, batch_size=32)
    alone = [train_run(copy.deepcopy(net), problem, steps=STEPS, lr=lr, batch_size=32)
             for lr in lrs]
    assert alone[1].status == "diverged" and alone[0].status == "complete"
    for got, want in zip(runs, alone, strict=True):
        assert_same_run(got, want)


class DataDependent(nn.Module):
    """A forward that branches on a value: vmap cannot batch it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out if float(out.detach().abs().max()) < 1e6 else out * 0


def test_signature_says_who_can_share_an_ensemble():
    a, b = mlp(), mlp()
    assert signature(a) == signature(b)  # other weights, same structure
    assert signature(a) != signature(cnn())
    leaky = [nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(s)) for s in (0.01, 0.2)]
    assert signature(leaky[0]) != signature(leaky[1])  # a setting differs
    assert signature(nn.Linear(3, 4)) != signature(nn.Linear(3, 5))
    pads = [nn.Sequential(nn.Conv2d(1, 2, 3, padding=p)) for p in (0, 1)]
    assert signature(pads[0]) != signature(pads[1])
    assert signature(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))) is None
    assert signature(nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5))) is None
    hooked = mlp()
    hooked[0].register_forward_hook(lambda *args: None)
    assert signature(hooked) is None


@pytest.fixture
def groups(monkeypatch):
    """The member count of every ensemble trained."""
    sizes: list[int] = []
    real = repair_runs.train_ensemble

    def spy(members, *args, **kwargs):
        sizes.append(len(members))
        return real(members, *args, **kwargs)

    monkeypatch.setattr(repair_runs, "train_ensemble", spy)
    return sizes


def _compare_tables(fast, slow) -> None:
    a, b = (r.table.set_index("candidate").sort_index() for r in (fast, slow))
    assert list(a.index) == list(b.index)
    assert a["verdict"].tolist() == b["verdict"].tolist()
    assert a["status"].tolist() == b["status"].tolist()
    for col in ("final_loss", "initial_loss"):
        assert a[col].tolist() == pytest.approx(b[col].tolist(), rel=REL)
    assert a["train_accuracy"].tolist() == pytest.approx(b["train_accuracy"].tolist(), abs=1e-6)
    assert fast.skipped == slow.skipped and fast.best == slow.best
    for name in a.index:
        assert_same_run(fast.runs[name], slow.runs[name])


def test_repair_through_the_ensemble_equals_repair_one_by_one(digits, groups):
    model = build(NetSpec(depth=6, width=16, activation="tanh"), (64,), 10, seed=0)
    names = ["init he_normal", "relu + he_normal", "lr x0.1", "batchnorm", "autopilot",
             "init critical (theory)"]
    fast = gp.repair(model, digits, budget_steps=STEPS, candidates=names, lr=0.05)
    # baseline, he_normal, lr x0.1 and the critical init share the tanh net's shapes; the
    # relu swap (another activation), batch norm (buffers) and autopilot (callbacks) alone
    assert groups == [4]
    slow = gp.repair(model, digits, budget_steps=STEPS, candidates=names, lr=0.05,
                     ensemble=False)
    assert groups == [4]
    _compare_tables(fast, slow)
    assert {"batchnorm", "autopilot", "relu + he_normal"} <= set(fast.table["candidate"])


def test_a_model_vmap_cannot_batch_trains_alone_with_the_same_results(digits, groups):
    model = DataDependent()
    model.body = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))
    fast = gp.repair(model, digits, budget_steps=5, candidates=["init he_normal", "lr x10"])
    assert groups == [3]  # tried, failed at its first step, then each trained alone
    slow = gp.repair(model, digits, budget_steps=5, candidates=["init he_normal", "lr x10"],
                     ensemble=False)
    _compare_tables(fast, slow)


def test_repair_takes_a_thread_count_and_restores_the_callers(digits):
    model = build(NetSpec(depth=3, width=8, activation="tanh"), (64,), 10, seed=0)
    before = torch.get_num_threads()
    gp.repair(model, digits, budget_steps=2, candidates=["lr x10"], threads=1)
    assert torch.get_num_threads() == before
    with pytest.raises(UserError, match="threads"):
        gp.repair(model, digits, budget_steps=2, threads=0)


def test_a_large_group_trains_as_several_ensembles_of_at_most_max_members(digits, groups):
    model = build(NetSpec(depth=3, width=8, activation="tanh"), (64,), 10, seed=0)
    names = ["init he_normal", "init lecun_normal", "init orthogonal", "lr x10", "lr x0.1",
             "init critical (theory)"]
    fast = gp.repair(model, digits, budget_steps=3, candidates=names)
    assert groups == [4, 3] and max(groups) <= repair_runs.MAX_MEMBERS
    assert set(fast.table["candidate"]) == {"baseline", *names}
    slow = gp.repair(model, digits, budget_steps=3, candidates=names, ensemble=False)
    _compare_tables(fast, slow)
