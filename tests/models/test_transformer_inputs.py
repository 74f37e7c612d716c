"""Transformers as a user has them: token ids, dict inputs, per-token targets, float64,
the residual-stream depth order; checked against losses computed by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import gradprobe as gp
from gradprobe.errors import UserError

T = pytest.importorskip("transformers")


def tiny_bert(n_layer: int = 2) -> nn.Module:
    torch.manual_seed(0)
    cfg = T.BertConfig(num_hidden_layers=n_layer, hidden_size=32, num_attention_heads=4,
                       intermediate_size=64, vocab_size=50, max_position_embeddings=16,
                       num_labels=3, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0)
    return T.BertForSequenceClassification(cfg)


def tiny_gpt2() -> nn.Module:
    torch.manual_seed(0)
    cfg = T.GPT2Config(n_layer=4, n_embd=32, n_head=4, vocab_size=50, n_positions=16,
                       bos_token_id=0, eos_token_id=0)
    return T.GPT2LMHeadModel(cfg)


def tokens(n: int, seq: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 50, (n, seq), generator=torch.Generator().manual_seed(seed))


def hand_loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean -log p(label) and accuracy over the labels that are not -100, by loops."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    losses, hits = [], []
    for i in range(y.shape[0]):
        for t in range(y.shape[1]):
            if int(y[i, t]) != -100:
                losses.append(-float(logp[i, t, int(y[i, t])]))
                hits.append(int(logits[i, t].argmax()) == int(y[i, t]))
    return sum(losses) / len(losses), sum(hits) / len(hits)


def test_gpt2_per_token_targets_full_coverage_and_the_loss_by_hand() -> None:
    model = tiny_gpt2()
    ids = tokens(32, 10)
    labels = torch.cat([ids[:, 1:], torch.full((32, 1), -100)], dim=1)  # next token
    labels[:4, :5] = -100
    diag = gp.diagnose(model, (ids, labels), steps=2, batch_size=16)
    assert diag.coverage == 1.0 and diag.evidence.profile.n_layers == 19  # 16 Conv1D + 3
    assert "incomplete_coverage" not in diag.kinds()
    model.eval()
    with torch.no_grad():
        want_loss, want_acc = hand_loss(model(ids).logits, labels)
    run = diag.evidence.training
    assert run.initial_loss == pytest.approx(want_loss, rel=1e-5)
    assert run.initial_accuracy == pytest.approx(want_acc, abs=1e-9)


def test_bert2_trains_and_is_healthy() -> None:
    ids = tokens(128, 8)
    y = ids[:, 1] % 3
    diag = gp.diagnose(tiny_bert(2), {"input_ids": ids, "labels": y}, steps=60,
                       optimizer="adam", lr=3e-3, batch_size=32)
    assert diag.evidence.training.final_train_accuracy > 0.8
    assert diag.healthy and diag.findings == [] and diag.coverage == 1.0


def test_depth_follows_the_residual_stream_not_the_call_order() -> None:
    model = tiny_bert(2)
    calls: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    weight = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    hooks = [m.register_forward_pre_hook(lambda m, a: calls.append(names[m]))
             for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    probe = gp.Probe(model)
    with probe:
        model(tokens(4, 8)).logits.sum().backward()
        probe.step()
    for h in hooks:
        h.remove()
    assert calls != weight  # BERT calls token_type before position embeddings
    assert [name for _, name, _ in probe.layers] == weight
    assert [d for d, _, _ in probe.layers] == list(range(1, len(weight) + 1))
    depth = probe.frame().groupby("layer")["depth"].first()
    assert [depth[n] for n in weight] == list(range(1, len(weight) + 1))


def masked_tokens(n: int, seq: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor,
                                              torch.Tensor]:
    """A seeded :class:`NeedsMask`, token ids, a mask hiding the second half, labels."""
    torch.manual_seed(0)
    ids = tokens(n, seq)
    mask = torch.ones_like(ids)
    mask[:, seq // 2:] = 0
    return NeedsMask(), ids, mask, ids[:, 0] % 3


def test_dict_inputs_go_to_forward_as_keywords() -> None:
    model, ids, mask, y = masked_tokens(16, 8)
    a = gp.diagnose(model, ({"input_ids": ids, "attention_mask": mask}, y), steps=1)
    b = gp.diagnose(model, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                            "labels": y.numpy()}, steps=1)
    with torch.no_grad():
        masked = float(F.cross_entropy(model(ids, mask), y))
        unmasked = float(F.cross_entropy(model(ids, torch.ones_like(ids)), y))
    assert abs(masked - unmasked) > 1e-3  # the mask matters, so it must have been passed
    for diag in (a, b):
        assert diag.evidence.training.initial_loss == pytest.approx(masked, rel=1e-5)


def test_token_ids_stay_int64() -> None:
    seen: list[torch.dtype] = []

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.out = nn.Embedding(50, 8), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.dtype)
            return self.out(self.emb(x).mean(1))

    ids = tokens(32, 6).int()
    gp.diagnose(Bag(), (ids, ids[:, 0] % 3), steps=2)
    assert seen and set(seen) == {torch.int64}


def test_float64_model_runs_in_float64() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    x = torch.randn(64, 5, dtype=torch.float64) * 3
    y = torch.randint(0, 3, (64,))
    diag = gp.diagnose(model, (x, y), steps=1)
    with torch.no_grad():
        want = float(F.cross_entropy(model(x), y))
        as_float32 = float(F.cross_entropy(model.float()(x.float()), y))
    assert abs(as_float32 - want) > 1e-10 * want  # float32 would be told apart
    assert diag.evidence.training.initial_loss == pytest.approx(want, rel=1e-12)


def test_custom_loss_fn_on_a_model_output_object() -> None:
    model = tiny_bert(2)
    ids = tokens(16, 8)
    y = ids[:, 0] % 3

    def smooth(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, label_smoothing=0.2)

    diag = gp.diagnose(model, (ids, y), loss_fn=smooth, steps=1)
    model.eval()
    with torch.no_grad():
        want = float(smooth(model(ids).logits, y))
    assert diag.evidence.training.initial_loss == pytest.approx(want, rel=1e-5)


class NeedsMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.out = nn.Embedding(50, 8), nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.emb(input_ids) * attention_mask[..., None]
        return self.out(h.mean(1))


class NoLogits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"hidden": self.out(x)}


def test_a_missing_forward_argument_is_named() -> None:
    ids = tokens(8, 5)
    with pytest.raises(UserError, match="attention_mask") as err:
        gp.diagnose(NeedsMask(), (ids, ids[:, 0] % 3))
    assert "\n" not in str(err.value)
    ok = gp.diagnose(NeedsMask(), ({"input_ids": ids, "attention_mask": ids * 0 + 1},
                                   ids[:, 0] % 3))
    assert ok.coverage == 1.0


def test_an_output_without_logits_or_loss_is_a_user_error() -> None:
    with pytest.raises(UserError, match="logits") as err:
        gp.diagnose(NoLogits(), (torch.randn(8, 4), torch.randint(0, 3, (8,))))
    assert "\n" not in str(err.value)


def test_labels_other_than_minus_100_must_be_classes() -> None:
    ids = tokens(8, 5)
    bad = ids.clone()
    bad[0, 0] = -3
    with pytest.raises(UserError, match="-100"):
        gp.diagnose(tiny_gpt2(), (ids, bad))


def test_repair_trains_candidates_on_dict_inputs() -> None:
    model, ids, mask, y = masked_tokens(32, 6)
    fixes = gp.repair(model, ({"input_ids": ids, "attention_mask": mask}, y), budget_steps=2,
                      candidates=["lr x10", "init he_normal"])
    assert set(fixes.table["candidate"]) == {"baseline", "lr x10", "init he_normal"}
    with torch.no_grad():
        want = float(F.cross_entropy(model(ids, mask), y))
    for name in ("baseline", "lr x10"):  # the unchanged model, before its first step
        assert fixes.runs[name].initial_loss == pytest.approx(want, rel=1e-5)


def test_autopilot_repairs_a_model_that_takes_dict_inputs() -> None:
    model, ids, mask, y = masked_tokens(32, 6)
    fixes = gp.repair(model, ({"input_ids": ids, "attention_mask": mask}, y), budget_steps=2,
                      candidates=["autopilot"])
    assert "autopilot" in set(fixes.table["candidate"]), fixes.skipped
    assert fixes.runs["autopilot"].steps == 2
