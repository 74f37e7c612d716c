"""``gradprobe diagnose`` on token data: --loss, --batch-size, --no-standardize, token npz
files, and the two bad-input cases (exit 2, one line)."""

from __future__ import annotations

import importlib.util
import json
import textwrap

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from typer.testing import CliRunner

from gradprobe.cli import app

runner = CliRunner()

MODELS = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.out = nn.Embedding(50, 4), nn.Linear(4, 3)
            with torch.no_grad():
                self.emb.weight.copy_(torch.sin(torch.arange(200.0)).reshape(50, 4))
                self.out.weight.copy_(torch.cos(torch.arange(12.0)).reshape(3, 4))
                self.out.bias.zero_()

        def forward(self, input_ids, attention_mask=None):
            h = self.emb(input_ids)
            if attention_mask is not None:
                h = h * attention_mask[..., None]
            return self.out(h.mean(1))

    class NeedsMask(Bag):
        def forward(self, input_ids, attention_mask):
            return super().forward(input_ids, attention_mask)

    class NoLogits(nn.Module):
        def __init__(self):
            super().__init__()
            self.out = nn.Linear(64, 10)

        def forward(self, x):
            return {"hidden": self.out(x)}

    class RawOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.out = nn.Linear(3, 2)

        def forward(self, x):
            if float(x.mean()) < 3:
                raise ValueError("inputs were standardised")
            return self.out(x)

    def bag():
        return Bag()

    def needs_mask():
        return NeedsMask()

    def no_logits():
        return NoLogits()

    def raw_only():
        return RawOnly()
    """
)


@pytest.fixture
def files(tmp_path):
    models = tmp_path / "models.py"
    models.write_text(MODELS)
    g = np.random.default_rng(0)
    ids = g.integers(0, 50, (40, 6))
    mask = np.ones_like(ids)
    mask[:, 4:] = 0
    tokens = tmp_path / "tokens.npz"
    np.savez(tokens, input_ids=ids, attention_mask=mask, labels=ids[:, 0] % 3)
    ids_only = tmp_path / "ids.npz"
    np.savez(ids_only, input_ids=ids, labels=ids[:, 0] % 3)
    np.savez(tmp_path / "ints.npz", x=ids, y=ids[:, 0] % 3)
    raw = tmp_path / "raw.npz"
    np.savez(raw, x=g.normal(5.0, 1.0, (40, 3)), y=g.integers(0, 2, 40))
    return models, tokens, ids_only, raw


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _factory(models, name):
    spec = importlib.util.spec_from_file_location("cli_models", models)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)()


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_token_npz_with_loss_and_batch_size(files, loss):
    models, tokens, _, _ = files
    result = invoke("diagnose", f"{models}:bag", "--data", tokens, "--loss", loss,
                    "--batch-size", 8, "--steps", 1, "--json")
    assert result.exit_code in (0, 1), result.output
    out = json.loads(result.output)
    assert out["evidence"]["training"]["batch_size"] == 8
    assert out["summary"]["coverage"] == 1.0
    arrays = np.load(tokens)
    ids, mask = torch.from_numpy(arrays["input_ids"]), torch.from_numpy(arrays["attention_mask"])
    y = torch.from_numpy(arrays["labels"])
    with torch.no_grad():
        logits = _factory(models, "bag")(ids, mask)  # the mask reached forward
    want = (F.cross_entropy(logits, y) if loss == "cross_entropy"
            else F.mse_loss(logits, F.one_hot(y, 3).float()))
    assert out["evidence"]["training"]["initial_loss"] == pytest.approx(float(want), rel=1e-5)


def test_no_standardize_keeps_float_features(files):
    models, _, _, raw = files
    standardised = invoke("diagnose", f"{models}:raw_only", "--data", raw)
    assert standardised.exit_code == 2 and "inputs were standardised" in standardised.output
    kept = invoke("diagnose", f"{models}:raw_only", "--data", raw, "--no-standardize")
    assert kept.exit_code in (0, 1), kept.output


def test_integer_x_in_an_npz_reaches_the_model_as_token_ids(files):
    models, tokens, _, _ = files
    result = invoke("diagnose", f"{models}:bag", "--data", tokens.parent / "ints.npz")
    assert result.exit_code in (0, 1), result.output  # an embedding rejects float or
    assert "coverage: 100.0%" in result.output       # standardised inputs


def test_unknown_loss_exits_2(files):
    models, tokens, _, _ = files
    result = invoke("diagnose", f"{models}:bag", "--data", tokens, "--loss", "hinge")
    assert result.exit_code == 2
    assert "cross_entropy" in result.output and len(result.output.strip().splitlines()) == 1


def test_forward_argument_the_data_lacks_exits_2_naming_it(files):
    models, _, ids_only, _ = files
    result = invoke("diagnose", f"{models}:needs_mask", "--data", ids_only)
    assert result.exit_code == 2
    assert "attention_mask" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_output_without_logits_or_loss_exits_2(files):
    models, _, _, _ = files
    result = invoke("diagnose", f"{models}:no_logits")
    assert result.exit_code == 2
    assert "logits" in result.output and len(result.output.strip().splitlines()) == 1
