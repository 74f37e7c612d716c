"""A declarative zoo of real architectures, tiny configs, random init, no downloads.

HF ``transformers`` models are built from their configs and wrapped so that ``forward``
takes one tensor and returns the logits; CNNs are hand-written (torchvision's wheel does
not import against the CPU torch here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


class Logits(nn.Module):
    """An HF model called with ``{key: x}``, returning ``.logits``."""

    def __init__(self, model: nn.Module, key: str) -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(**{self.key: x}).logits


def gpt2(n_layer: int = 4) -> nn.Module:
    import transformers as T

    cfg = T.GPT2Config(n_layer=n_layer, n_embd=32, n_head=4, vocab_size=50, n_positions=16,
                       bos_token_id=0, eos_token_id=0, attn_pdrop=0.0, embd_pdrop=0.0,
                       resid_pdrop=0.0)
    return Logits(T.GPT2LMHeadModel(cfg), "input_ids")


def bert(n_layer: int) -> nn.Module:
    import transformers as T

    cfg = T.BertConfig(num_hidden_layers=n_layer, hidden_size=32, num_attention_heads=4,
                       intermediate_size=64, vocab_size=50, max_position_embeddings=16,
                       num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return Logits(T.BertForSequenceClassification(cfg), "input_ids")


def vit() -> nn.Module:
    import transformers as T

    cfg = T.ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=32,
                      num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                      num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return Logits(T.ViTForImageClassification(cfg), "pixel_values")


def vgg(batch_norm: bool = False, plan: tuple = (8, 8, "M", 16, 16, "M", 16, "M")) -> nn.Module:
    """VGG-style: 3x3 convolutions (+ BN) + ReLU, max pools, two Linear layers."""
    layers: list[nn.Module] = []
    c = 3
    for v in plan:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        layers.append(nn.Conv2d(c, v, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU())
        c = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * 2 * 2, 16), nn.ReLU(),
                         nn.Linear(16, 5))


class Basic(nn.Module):
    """ResNet basic block; the activations are functional (``F.relu``)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + x)


class ResNet(nn.Module):
    """ResNet-style: stem, two basic blocks, global average pool, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.blocks = nn.Sequential(Basic(8), Basic(8))
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(torch.relu(self.bn(self.stem(x))))
        return self.fc(h.mean((2, 3)))


class SigmoidMLP(nn.Module):
    """Deep MLP whose activation is ``torch.sigmoid`` inside ``forward`` (no modules)."""

    def __init__(self, depth: int = 10, width: int = 32, d_in: int = 64, d_out: int = 10
                 ) -> None:
        super().__init__()
        sizes = [d_in] + [width] * (depth - 1)
        self.layers = nn.ModuleList(nn.Linear(a, width) for a in sizes)
        self.head = nn.Linear(width, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.sigmoid(layer(x))
        return self.head(x)


def _tokens(g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 50, (4, 10), generator=g)


def _images(size: int) -> Callable[[torch.Generator], torch.Tensor]:
    return lambda g: torch.randn(4, 3, size, size, generator=g)


@dataclass(frozen=True)
class Arch:
    id: str
    build: Callable[[], nn.Module]
    inputs: Callable[[torch.Generator], torch.Tensor]
    hf: bool = False  # needs transformers


ARCHS = [
    Arch("gpt2_4", gpt2, _tokens, hf=True),
    Arch("bert_2", lambda: bert(2), _tokens, hf=True),
    Arch("bert_4", lambda: bert(4), _tokens, hf=True),
    Arch("vit", vit, _images(8), hf=True),
    Arch("vgg", vgg, _images(16)),
    Arch("vgg_bn", lambda: vgg(batch_norm=True), _images(16)),
    Arch("resnet", ResNet, _images(8)),
    Arch("sigmoid_mlp", SigmoidMLP, lambda g: torch.randn(8, 64, generator=g)),
]
