"""gp.diagnose's contract: data forms, losses, the original model untouched, reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import gradprobe as gp
from gradprobe.diagnosis import Diagnosis, collect_evidence
from gradprobe.diagnosis.inputs import resolve_problem
from gradprobe.errors import UserError
from gradprobe.spec import DataSpec


def _sigmoid_stack(depth: int = 16, width: int = 24, in_features: int = 64) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(in_features, width), nn.Sigmoid()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_gp_diagnose_is_callable_even_after_the_package_is_imported(digits):
    import gradprobe.diagnosis  # the package has its own name: gp.diagnose stays the function

    diag = gp.diagnose(_sigmoid_stack(), data=(digits.x_train, digits.y_train))
    assert isinstance(diag, Diagnosis)
    assert gp.repair is gradprobe.diagnosis.repair
    assert gp.diagnose is gradprobe.diagnosis.diagnose


def test_data_forms_agree(digits):
    model = _sigmoid_stack()
    by_tensors = gp.diagnose(model, (digits.x_train, digits.y_train))
    by_numpy = gp.diagnose(model, (digits.x_train.numpy().astype(np.float64),
                                   digits.y_train.numpy()))
    by_name = gp.diagnose(model, "digits")
    by_spec = gp.diagnose(model, DataSpec(name="digits"))
    by_dataset = gp.diagnose(model, digits)
    changes = {round(d.evidence.profile.log10_change, 9)
               for d in (by_tensors, by_numpy, by_name, by_spec, by_dataset)}
    assert len(changes) == 1  # same samples, same seeded batches: same numbers
    assert by_tensors.kinds() == ["vanishing_gradient"]
    assert by_name.data_name == "digits" and by_tensors.data_name == "(x, y)"


@pytest.mark.parametrize(
    ("data", "message"),
    [("nosuch", "unknown dataset"), ((torch.zeros(4, 64),), r"\(x, y\)"),
     ((torch.zeros(4, 64), torch.zeros(5, dtype=torch.long)), "4 samples but y has 5"),
     (42, "data must be"), ("missing.npz", "file not found")],
)
def test_bad_data_is_a_user_error(data, message):
    with pytest.raises(UserError, match=message):
        gp.diagnose(_sigmoid_stack(), data)


def test_model_that_fails_is_a_user_error(digits):
    with pytest.raises(UserError, match="the model failed on inputs of shape"):
        gp.diagnose(nn.Sequential(nn.Linear(3, 2)), digits)
    with pytest.raises(UserError, match="nn.Module"):
        gp.diagnose("not a model", digits)
    with pytest.raises(UserError, match="steps"):
        gp.diagnose(_sigmoid_stack(), digits, steps=-1)


def test_the_original_model_is_never_modified(digits):
    model = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    model.eval()
    before = _state(model)  # weights and BatchNorm running statistics
    gp.diagnose(model, digits, steps=5)
    gp.repair(model, digits, budget_steps=3, candidates=["init he_normal", "residual"])
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert not model._forward_hooks and not model[0]._forward_hooks


def test_custom_loss_and_regression_targets():
    torch.manual_seed(0)
    x = torch.randn(200, 8)
    y = x[:, :1] * 2.0  # float targets: MSE by default
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    diag = gp.diagnose(model, (x, y), steps=30)
    assert diag.evidence.training is not None
    assert diag.evidence.training.final_train_accuracy is None  # no accuracy for regression
    assert resolve_problem((x, y)).loss_name == "mse"
    calls = []

    def l1(out, target):
        calls.append(out.shape)
        return (out - target).abs().mean()

    gp.diagnose(model, (x, y), loss_fn=l1)
    assert calls and resolve_problem((x, y), l1).loss_name == "l1"
    with pytest.raises(UserError, match="scalar"):
        gp.diagnose(model, (x, y), loss_fn=lambda o, t: (o - t).abs())


def test_image_models_get_image_shaped_inputs(digits):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 64, 10))
    diag = gp.diagnose(model, digits)
    assert diag.healthy
    assert any("per-sample shape (1, 8, 8)" in n for n in diag.notes)


def test_the_callers_random_state_is_left_alone(digits):
    model = nn.Sequential(nn.Linear(64, 16), nn.Dropout(0.2), nn.ReLU(), nn.Linear(16, 10))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    gp.diagnose(model, digits, steps=3)
    assert torch.equal(torch.rand(3), expected)


def test_deterministic(digits):
    a = collect_evidence(_sigmoid_stack(), resolve_problem(digits), seed=3)
    b = collect_evidence(_sigmoid_stack(), resolve_problem(digits), seed=3)
    c = collect_evidence(_sigmoid_stack(), resolve_problem(digits), seed=4)
    assert a.profile.batches == b.profile.batches
    assert a.profile.batches != c.profile.batches


def test_reports(digits):
    diag = gp.diagnose(_sigmoid_stack(), digits)
    text = str(diag)
    assert "[error] vanishing_gradient" in text and "cause:" in text and "fix:" in text
    md = diag.to_markdown()
    assert "| error | `vanishing_gradient` |" in md and "**Cause.**" in md
    d = json.loads(json.dumps(diag.to_dict(), allow_nan=False))
    assert d["healthy"] is False
    f = d["findings"][0]
    assert set(f) == {"kind", "severity", "layers", "evidence", "cause", "recommendation"}
    assert f["evidence"]["n_batches"] == 4
    assert d["evidence"]["profile"]["n_layers"] == 16


def test_unknown_parametrised_layers_are_reported_not_skipped(digits):
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.s = nn.Parameter(torch.ones(32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.s

    model = nn.Sequential(nn.Linear(64, 32), Scale(), nn.ReLU(), nn.Linear(32, 10))
    diag = gp.diagnose(model, digits)
    assert any("1 (Scale)" in n for n in diag.notes)


def test_callbacks_join_the_training_run_and_can_end_it(digits):
    from gradprobe.train import Callback

    class StopAfter(Callback):
        def __init__(self, last: int) -> None:
            self.last, self.steps = last, []

        def after_update(self, loop, step, loss):
            self.steps.append(step)
            if step == self.last:
                loop.stop("enough", "interrupted")

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))
    stop = StopAfter(2)
    diag = gp.diagnose(model, digits, steps=50, callbacks=[stop])
    assert stop.steps == [0, 1, 2]
    assert diag.evidence.training.status == "interrupted"
