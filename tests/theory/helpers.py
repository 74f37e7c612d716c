"""Brute-force references shared by the theory tests: real networks and autograd."""

from __future__ import annotations

import torch
from torch import nn


def plain_mlp(
    act: type[nn.Module] | None,
    sigma_w2: float,
    sigma_b2: float,
    depth: int,
    width: int | list[int],
    n_in: int | None = None,
    seed: int = 0,
    orthogonal: bool = False,
) -> nn.Sequential:
    """depth Linear layers with W ~ N(0, sigma_w2 / fan_in), b ~ N(0, sigma_b2), act between."""
    widths = width if isinstance(width, list) else [width] * depth
    gen = torch.Generator().manual_seed(seed)
    mods: list[nn.Module] = []
    fan_in = n_in or widths[0]
    for i, fan_out in enumerate(widths):
        lin = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            if orthogonal:
                a = torch.randn(max(fan_in, fan_out), min(fan_in, fan_out), generator=gen)
                q, r = torch.linalg.qr(a)
                q = q * torch.sign(torch.diagonal(r))
                lin.weight.copy_((q if fan_out >= fan_in else q.T) * sigma_w2**0.5)
            else:
                lin.weight.normal_(0.0, (sigma_w2 / fan_in) ** 0.5, generator=gen)
            lin.bias.normal_(0.0, sigma_b2**0.5, generator=gen)
        mods.append(lin)
        if i < len(widths) - 1 and act is not None:
            mods.append(act())
        fan_in = fan_out
    return nn.Sequential(*mods)


def backward_signal(model: nn.Module, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """RMS over the batch of |dL/d(output of each Linear)|, L a fixed random projection."""
    outs: list[torch.Tensor] = []

    def keep(module: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        out.retain_grad()
        outs.append(out)

    hooks = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        y = model(x)
        u = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
        ((y * u).sum() / y.shape[0]).backward()
    finally:
        for h in hooks:
            h.remove()
    return torch.stack([o.grad.pow(2).sum().div(x.shape[0]).sqrt() for o in outs])
