"""What intercepting functional activations costs a recorded step, side by side.

Run: ``python benchmarks/functional_activations.py [--steps 30]``. One process, one thread;
the same deep sigmoid MLP twice (activations as ``nn.Sigmoid`` modules, then as
``torch.sigmoid`` calls inside ``forward``), each bare and under a probe recording every
step. Prints each recorded step's time as a ratio to the bare step of the same net.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import gradprobe as gp


class FunctionalMLP(nn.Module):
    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers[:-1])
        self.head = layers[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.sigmoid(layer(x))
        return self.head(x)


def nets(depth: int = 10, width: int = 32) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    linears = [nn.Linear(64 if i == 0 else width, width) for i in range(depth)]
    linears.append(nn.Linear(width, 10))
    modules: list[nn.Module] = []
    for lin in linears[:-1]:
        modules += [lin, nn.Sigmoid()]
    return nn.Sequential(*modules, linears[-1]), FunctionalMLP(linears)


def seconds_per_step(model: nn.Module, x: torch.Tensor, steps: int, probe: bool) -> float:
    def one() -> None:
        model.zero_grad()
        model(x).pow(2).mean().backward()

    p = gp.Probe(model).attach() if probe else None
    one()
    if p is not None:
        p.step()
    start = time.perf_counter()
    for _ in range(steps):
        one()
        if p is not None:
            p.step()
    if p is not None:
        p.frame()
        p.detach()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.randn(128, 64)
    for label, model in zip(("nn.Sigmoid modules", "torch.sigmoid calls"), nets(),
                            strict=True):
        bare = seconds_per_step(model, x, args.steps, probe=False)
        probed = seconds_per_step(model, x, args.steps, probe=True)
        print(f"{label:20s} bare {bare * 1e3:6.2f} ms/step, recorded {probed / bare:5.2f}x")


if __name__ == "__main__":
    main()
