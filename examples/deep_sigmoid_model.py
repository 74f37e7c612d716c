"""A user's model for ``gradprobe diagnose examples/deep_sigmoid_model.py:factory``.

Any file with a function returning an ``nn.Module`` works; nothing here uses gradprobe.
"""

from torch import nn


def factory(depth: int = 30, width: int = 64, in_features: int = 64, classes: int = 10):
    """A plain deep sigmoid MLP for 8x8 digit images (flattened to 64 features)."""
    layers: list[nn.Module] = [nn.Linear(in_features, width), nn.Sigmoid()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.Sigmoid()]
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)
