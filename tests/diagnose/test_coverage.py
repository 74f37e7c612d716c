"""Coverage, always stated: ``Diagnosis.coverage``, ``incomplete_coverage``, CLI exit 1."""

from __future__ import annotations

import json
import textwrap

import torch
from torch import nn
from typer.testing import CliRunner

import gradprobe as gp
from gradprobe.cli import app
from gradprobe.diagnosis import Thresholds
from gradprobe.probe import LayerHandler, register_layer

MODELS = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Mix(nn.Module):
        '''A weight layer the probe does not know: x @ W, W stored (in, out).'''

        def __init__(self, n_in, n_out):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(n_in, n_out) / n_in ** 0.5)

        def forward(self, x):
            return x @ self.weight

    def mixed():
        return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), Mix(16, 32), nn.ReLU(),
                             nn.Linear(32, 10))
    """
)


def load(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(MODELS)
    namespace: dict = {}
    exec(compile(MODELS, str(path), "exec"), namespace)  # noqa: S102
    return path, namespace


def digits_like(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_unknown_weight_layer_is_incomplete_coverage_until_registered(tmp_path) -> None:
    _, ns = load(tmp_path)
    torch.manual_seed(0)
    model = ns["mixed"]()
    measured = sum(p.numel() for m in (model[0], model[4]) for p in m.parameters())
    expected = measured / sum(p.numel() for p in model.parameters())  # 1210 / 1722
    diag = gp.diagnose(model, digits_like())
    assert abs(diag.coverage - expected) < 1e-12 and diag.coverage < 0.9
    assert diag.unmeasured == ["2"]
    finding = diag.by_kind("incomplete_coverage")
    assert finding is not None and finding.layers == ["2"] and not diag.healthy
    assert "register_layer" in finding.recommendation and "Mix" in finding.cause
    assert f"coverage: {100 * expected:.1f}%" in str(diag)
    assert diag.to_dict()["summary"]["coverage"] == diag.coverage
    # lowering the threshold below the measured share removes the finding
    lenient = gp.diagnose(model, digits_like(), thresholds=Thresholds(min_coverage=0.5))
    assert lenient.by_kind("incomplete_coverage") is None
    # registered as a transposed-storage weight layer, it is measured with its fans
    register_layer(ns["Mix"], LayerHandler(unbatched_ndim=1, bias=None, transposed=True))
    again = gp.diagnose(model, digits_like())
    assert again.coverage == 1.0 and again.by_kind("incomplete_coverage") is None
    row = next(r for r in again.evidence.layers if r.name == "2")
    assert (row.fan_in, row.fan_out) == (16, 32)


def test_cli_reports_coverage_and_exits_1_for_it(tmp_path) -> None:
    path, _ = load(tmp_path)
    result = CliRunner().invoke(app, ["diagnose", f"{path}:mixed", "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert "incomplete_coverage" in [f["kind"] for f in data["findings"]]
    assert data["summary"]["coverage"] < 0.9 and data["summary"]["unmeasured"] == ["2"]
    text = CliRunner().invoke(app, ["diagnose", f"{path}:mixed"])
    assert text.exit_code == 1 and "coverage: " in text.output
    assert "[warning] incomplete_coverage in 2" in text.output


def test_healthy_model_states_full_coverage() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 10))
    diag = gp.diagnose(model, digits_like())
    assert diag.coverage == 1.0 and diag.unmeasured == []
    assert "coverage: 100.0% of trainable parameters measured" in str(diag)
