"""The Hugging Face TrainerCallback on a real transformers.Trainer (CPU, tiny models)."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import gradprobe as gp

transformers = pytest.importorskip("transformers")
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from gradprobe.integrations.hf import GradProbeCallback, headline  # noqa: E402


class Pairs(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, key: str = "x") -> None:
        self.x, self.y, self.key = x, y, key

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {self.key: self.x[i], "labels": self.y[i]}


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []  # micro-batches, in order

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.append((x.detach().clone(), labels.clone()))
        logits = self.net(x)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


class Spy(TrainerCallback):
    def __init__(self) -> None:
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        self.logs.append(dict(logs or {}))


def _args(tmp_path: Path, **kw) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), max_steps=4, report_to=[], use_cpu=True,
                             per_device_train_batch_size=8, logging_steps=1, save_strategy="no",
                             disable_tqdm=True, learning_rate=0.1, **kw)


def test_hf_callback_on_a_tiny_bert(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16, num_labels=2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg)
    g = torch.Generator().manual_seed(0)
    data = Pairs(torch.randint(0, 50, (32, 8), generator=g),
                 torch.randint(0, 2, (32,), generator=g), key="input_ids")
    cb, spy = GradProbeCallback(every=2), Spy()
    trainer = Trainer(model=model, args=_args(tmp_path), train_dataset=data, callbacks=[spy])
    cb.add_to(trainer)
    assert trainer.callback_handler.callbacks[0] is cb
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    probe = cb.probe
    assert probe is not None and not probe.attached
    assert probe.recorded_steps == [0, 2]
    names = {name for _, name, _ in probe.layers}
    assert "bert.encoder.layer.0.attention.self.query" in names and "classifier" in names
    frame = probe.frame()
    assert set(frame.query("quantity == 'update_to_weight_ratio'").step) == {0, 2}
    assert all(len(m._forward_hooks) + len(m._forward_pre_hooks) == 0 for m in model.modules())
    # the headline reached the loggers' dict, and equals the record it was read from
    logged = [d for d in spy.logs if "gradprobe/signal_log10_first_last" in d]
    # one log per step (logging_steps=1) and the final summary: the last recorded step's
    assert len(logged) == 5
    assert [d["gradprobe/step"] for d in logged] == [0.0, 0.0, 2.0, 2.0, 2.0]
    want = headline([tuple(r) for r in frame.itertuples(index=False)
                     if r.step == 2], "gradprobe")
    assert logged[-1]["gradprobe/signal_log10_first_last"] == pytest.approx(
        want["gradprobe/signal_log10_first_last"], rel=1e-12)
    assert logged[-1]["gradprobe/layers_measured"] == len(probe.layers)


def _reference(model0: MLP, batches: list[torch.Tensor], labels: list[torch.Tensor],
               accumulation: int) -> tuple[float, float]:
    """(backward_signal_norm of net.2 on the first micro-batch, |dL/dW| of net.2 accumulated
    over the micro-batches), by autograd on a float64 copy of the initial weights."""
    net = copy.deepcopy(model0.net).double()
    signal = None
    for i, (x, y) in enumerate(zip(batches, labels, strict=True)):
        logits = net(x.double())
        logits.retain_grad()
        (nn.functional.cross_entropy(logits, y) / accumulation).backward()
        if i == 0:
            signal = float(logits.grad.pow(2).sum().div(len(x)).sqrt())
    return signal, float(net[2].weight.grad.norm())


def test_hf_gradient_accumulation_is_not_weight_sharing(tmp_path: Path) -> None:
    model = MLP()
    model0 = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    cb = GradProbeCallback()
    args = _args(tmp_path, gradient_accumulation_steps=2, max_grad_norm=0.0)
    trainer = Trainer(model=model, args=args, train_dataset=Pairs(x, y), callbacks=[cb])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if "more than once" in str(w.message)]
    assert cb.probe.recorded_steps == [0, 1, 2, 3]  # one per optimizer step, not per batch
    assert len(model.seen) == 8  # 4 steps x 2 micro-batches ran
    # step 0: signals of the first micro-batch, the weight gradient of both
    xs, ys = zip(*model.seen[:2], strict=True)
    want_signal, want_grad = _reference(model0, list(xs), list(ys), 2)
    frame = cb.probe.frame().query("step == 0 and layer == 'net.2'")
    got = dict(zip(frame.quantity, frame.value, strict=True))
    assert got["backward_signal_norm"] == pytest.approx(want_signal, rel=1e-5)
    assert got["weight_grad_norm"] == pytest.approx(want_grad, rel=1e-5)


def test_hf_callback_is_exported_and_checks_its_arguments() -> None:
    assert gp.integrations.hf.GradProbeCallback is GradProbeCallback
    with pytest.raises(ValueError, match="every"):
        GradProbeCallback(every=0)
    with pytest.raises(ValueError, match="on_unknown"):
        GradProbeCallback(on_unknown="ignore")
    assert headline([], "gp") == {}
    assert math.isinf(headline([(0, "a", 1, "backward_signal_norm", 0.0),
                                (0, "b", 2, "backward_signal_norm", 1.0)],
                               "gp")["gp/signal_log10_first_last"])
