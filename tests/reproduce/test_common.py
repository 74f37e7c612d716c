"""The entries' shared helpers against the one training loop and plain autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradprobe.nets.plain import build
from gradprobe.reproduce.common import backward_norms, data_for, experiment, train_group
from gradprobe.train import train


def test_linear_nets_train_in_the_engine_as_in_train():
    # deep linear nets (saxe2014) in the vectorised engine, no probe: an identity
    # activation's pre-activations must survive the forward pass
    spec = experiment(depth=4, width=8, activation="linear", init={"name": "orthogonal"},
                      data="iris", steps=5, lr=0.05, loss="mse", batch_size=16)
    (engine,) = train_group([spec])
    data = data_for(spec)
    alone = train(build(spec.net, data.in_shape, data.n_classes, seed=spec.train.seed), data,
                  spec.train, probe=False)
    assert engine.status == alone.status == "complete"
    assert engine.final_loss == pytest.approx(alone.final_loss, rel=1e-5)


def test_backward_norms_match_autograd():
    spec = experiment(depth=5, width=16, activation="relu", init="he_normal", data="iris")
    data = data_for(spec)
    x = data.x_train[:3]
    norms = backward_norms(spec, [0, 1], x)
    gen = torch.Generator().manual_seed(12345)
    u = torch.randn((2, 3, data.n_classes), generator=gen) / 3  # the helper's projection
    for m, seed in enumerate((0, 1)):
        net = build(spec.net, data.in_shape, data.n_classes, seed=seed)
        acts: list[torch.Tensor] = []

        def keep(mod, inp, out, acts=acts):
            out.retain_grad()
            acts.append(out)

        hooks = [mod.register_forward_hook(keep) for mod in net.modules()
                 if isinstance(mod, torch.nn.Linear)]
        (net(x) * u[m]).sum().backward()
        for hk in hooks:
            hk.remove()
        expected = np.array([float(a.grad.norm()) for a in acts])
        assert np.allclose(norms[m], expected, rtol=1e-4)
