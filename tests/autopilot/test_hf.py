"""Autopilot through the Hugging Face Trainer: a tiny BERT built from a config, on the CPU."""

from __future__ import annotations

import statistics
import warnings
from pathlib import Path

import pytest
import torch

from gradprobe.autopilot import records as R

transformers = pytest.importorskip("transformers")
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from gradprobe.integrations.hf import AutopilotCallback  # noqa: E402


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 50, (n, 8), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class Grads(TrainerCallback):
    """Each optimizer step's weight gradients of autopilot's layers, and the weights."""

    def __init__(self, ap: AutopilotCallback) -> None:
        self.ap, self.grads, self.weights, self.lr = ap, [], [], []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):  # noqa: ANN001
        ws = [s.weight.detach() for s in self.ap.autopilot.slots]
        self.grads.append([s.weight.grad.clone() for s in self.ap.autopilot.slots])
        self.weights.append([w.clone() for w in ws])
        self.lr.append(optimizer.param_groups[0]["lr"])


class Before(Grads):
    pass  # the Trainer warns about two callbacks of one class


class After(Grads):
    pass


def _bert():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16, num_labels=2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return BertForSequenceClassification(cfg)


def test_autopilot_in_the_hf_trainer_scales_and_clips_each_layers_gradient(tmp_path: Path):
    clip, max_scale, steps = 0.03, 10.0, 4  # relative updates here: 0.004-0.07
    cb = AutopilotCallback(every=1, clip=clip, max_lr_scale=max_scale)
    before, after = Before(cb), After(cb)
    model = _bert()
    types = [type(m) for m in model.modules()]
    count = sum(p.numel() for p in model.parameters())
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=steps, report_to=[],
                             use_cpu=True, per_device_train_batch_size=8, save_strategy="no",
                             disable_tqdm=True, learning_rate=0.1, optim="sgd",
                             lr_scheduler_type="constant", max_grad_norm=0.0)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(),
                      callbacks=[before, cb, after])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    assert [type(m) for m in model.modules()] == types
    assert sum(p.numel() for p in model.parameters()) == count
    names = [s.name for s in cb.autopilot.slots]
    assert len(names) >= 8 and cb.notes[0]["action"] == "init"
    assert {r[1] for r in cb.rows if r[3] == R.INIT_STD} >= set(names)
    lr_rows = [r for r in cb.rows if r[3] == R.LR_SCALE]
    assert sorted({r[0] for r in lr_rows}) == list(range(steps))
    clipped = 0
    for step in range(steps):
        g0, g1, ws = before.grads[step], after.grads[step], before.weights[step]
        # reference: LARS-like multipliers up to the median relative update, then AGC
        lr = before.lr[step]
        rel = [lr * float(g.norm()) / float(w.norm()) for g, w in zip(g0, ws, strict=True)]
        median = statistics.median_low(rel)
        scales = [min(max(median / r, 1.0), max_scale) for r in rel]
        assert [r[4] for r in lr_rows if r[0] == step] == pytest.approx(scales, rel=1e-6)
        for a, b, r, s in zip(g0, g1, rel, scales, strict=True):
            want = s if r * s <= clip else clip / r
            clipped += r * s > clip
            assert torch.allclose(b, a * want, rtol=1e-5, atol=0)
    assert 0 < clipped < steps * len(names)  # both branches taken
    assert not cb.autopilot.healthy


def test_autopilot_in_the_hf_trainer_with_gradient_accumulation(tmp_path: Path):
    cb = AutopilotCallback(every=2)
    seen = []

    class Count(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):  # noqa: ANN001
            seen.append(state.global_step)

    model = _bert()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, report_to=[],
                             use_cpu=True, per_device_train_batch_size=4, save_strategy="no",
                             disable_tqdm=True, learning_rate=0.1, optim="sgd",
                             gradient_accumulation_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(model=model, args=args, train_dataset=Tokens(),
                callbacks=[cb, Count()]).train()
    assert seen == [0, 1, 2, 3]  # one call per optimizer step, not per micro-batch
    checks = sorted({r[0] for r in cb.rows if r[3] == R.LR_SCALE})
    assert checks == [0, 2]
    assert sum(r[3] == R.INIT_STD for r in cb.rows) == len(cb.autopilot.slots)  # init once
    assert all(len(m._forward_pre_hooks) == 0 for m in model.modules())  # all removed
