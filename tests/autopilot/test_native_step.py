"""The compiled per-step kernel (``native/scale.c``) against torch and float64 brute force:
sums of squares, the clipping decision, and gradients multiplied bit for bit as torch's
``_foreach_mul_`` by a float32 factor does."""

from __future__ import annotations

import math

import pytest
import torch

from gradprobe.native import build
from gradprobe.native.build import find_compiler
from gradprobe.native.scale import LayerKernel


def _ran(result):
    """The kernel's result; where no C compiler exists it must have refused (None)."""
    if find_compiler() is None:
        assert result is None
        return None
    assert result is not None
    return result

# sizes: a tail shorter than a vector, one block and a bit, and one over the threaded cut
WEIGHTS = [1, 63, 64 * 64 + 1, 300_000]
BIASES = [0, 7, 65, 0]


def _case(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor | None], list[float]]:
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(n, generator=gen) * 10.0 ** -k for k, n in enumerate(WEIGHTS)]
    biases = [torch.randn(n, generator=gen) if n else None for n in BIASES]
    scale = [1.0, 2.5, 1.0, 7.0]
    return weights, biases, scale


def _reference(weights, scale, per, clip):
    """Factors and clipped layers from the rules, with float64 sums of squares."""
    norms = [float(w.double().pow(2).sum().sqrt()) for w in weights]
    clipped = [i for i, (p, g) in enumerate(zip(per, norms, strict=True)) if p * g > clip]
    factors = [s * (clip / (p * g)) if i in clipped else s
               for i, (s, p, g) in enumerate(zip(scale, per, norms, strict=True))]
    return norms, factors, clipped


@pytest.mark.parametrize("threads", [1, 2])
def test_sums_clipping_and_multiply_equal_the_rules(threads):
    weights, biases, scale = _case(0)
    norms = [float(w.double().norm()) for w in weights]
    clip = 1.0
    per = [2.0 / norms[0], 0.1 / norms[1], 3.0 / norms[2], 0.01 / norms[3]]  # 0, 2 clip
    w0 = [w.clone() for w in weights]
    b0 = [None if b is None else b.clone() for b in biases]
    kernel = LayerKernel(WEIGHTS, BIASES)
    kernel.set_factors(scale, per, clip)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        done = _ran(kernel.run(weights, biases))
    finally:
        torch.set_num_threads(old)
    if done is None:
        return
    want_norms, want_factors, want_clipped = _reference(w0, scale, per, clip)
    assert done.clipped == want_clipped == [0, 2]
    assert [math.sqrt(q) for q in done.sum_sq] == pytest.approx(want_norms, rel=1e-6)
    assert done.factors == pytest.approx(want_factors, rel=1e-6)
    for f, w, b, wb, bb in zip(done.factors, weights, biases, w0, b0, strict=True):
        factor = torch.tensor(f, dtype=torch.float32)  # what _foreach_mul_ multiplies by
        assert torch.equal(w, wb * factor)
        assert b is None or torch.equal(b, bb * factor)


def test_nan_is_never_clipped_and_tiny_gradients_are_summed_in_float64():
    nan = torch.tensor([1.0, float("nan"), 2.0])
    tiny = torch.full((100,), 3e-25)  # squares underflow float32
    kernel = LayerKernel([3, 100], [0, 0])
    kernel.set_factors([2.0, 1.0], [1.0, 1.0], clip=1e-30)
    done = _ran(kernel.run([nan, tiny], [None, None], tiny=1e-30))
    if done is None:
        return
    assert math.isnan(done.sum_sq[0]) and 0 not in done.clipped and done.factors[0] == 2.0
    assert done.sum_sq[1] == pytest.approx(float(tiny.double().pow(2).sum()), rel=1e-6)
    assert done.clipped == [1]  # 3e-24 > 1e-30: clipped


def test_sums_only_write_nothing_and_unfit_tensors_are_refused():
    weights, biases, scale = _case(1)
    kernel = LayerKernel(WEIGHTS, BIASES)
    kernel.set_factors(scale, [1e9] * 4, clip=1e-9)  # every layer would clip
    copies = [w.clone() for w in weights]
    done = _ran(kernel.run(weights, biases, multiply=False))
    if done is None:
        return
    assert done.clipped == [] and done.factors == [1.0] * 4
    assert all(torch.equal(w, c) for w, c in zip(weights, copies, strict=True))
    for bad in (weights[2].double(), torch.randn(2 * WEIGHTS[2])[::2]):
        assert kernel.run([weights[0], weights[1], bad, weights[3]], biases) is None
    assert all(torch.equal(w, c) for w, c in zip(weights, copies, strict=True))


def test_without_the_library_run_does_nothing(monkeypatch):
    monkeypatch.setattr(build, "load", lambda: None)
    weights, biases, scale = _case(2)
    kernel = LayerKernel(WEIGHTS, BIASES)
    kernel.set_factors(scale, None, None)
    assert kernel.run(weights, biases) is None


def test_without_clipping_the_multiply_takes_no_sums():
    weights, biases, scale = _case(3)
    w0 = [w.clone() for w in weights]
    kernel = LayerKernel(WEIGHTS, BIASES)
    kernel.set_factors(scale, [1e9] * 4, clip=None)  # per is ignored without clip
    done = _ran(kernel.run(weights, biases))
    if done is None:
        return
    assert done.factors == scale and done.clipped == []
    assert all(math.isnan(q) for q in done.sum_sq)
    for s, w, wb in zip(scale, weights, w0, strict=True):
        assert torch.equal(w, wb * torch.tensor(s, dtype=torch.float32))


def test_a_layer_without_gradient_is_left_alone():
    weights, biases, scale = _case(4)
    kernel = LayerKernel(WEIGHTS, BIASES)
    kernel.set_factors(scale, [1.0] * 4, clip=1e9)
    bias = biases[1].clone()
    done = _ran(kernel.run([weights[0], None, weights[2], weights[3]], biases))
    if done is None:
        return
    assert math.isnan(done.sum_sq[1]) and done.factors[1] == 1.0
    assert torch.equal(biases[1], bias)
    assert done.factors[3] == scale[3]
