"""The probe on a GPU: same numbers as the reference, no host sync outside step()."""

from __future__ import annotations

import pytest
import torch
from probe_helpers import Problem, assert_frames_match, clone, loss_fn, make, reference_frame

import gradprobe as gp

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def grads_after_step(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    out = model(x)
    loss_fn(out).backward()
    return out, [p.grad for p in model.parameters()]


def test_cuda_matches_reference_and_is_bitwise_transparent(problem: Problem) -> None:
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    model, x = make(problem)
    model, x = model.cuda(), x.cuda()
    ref_model, bare, bare2 = clone(model), clone(model), clone(model)
    with gp.Probe(model) as probe:
        out, grads = grads_after_step(model, x)
        probe.step()
    assert_frames_match(probe.frame(), reference_frame(ref_model, x))
    bare_out, bare_grads = grads_after_step(bare, x)
    _, bare2_grads = grads_after_step(bare2, x)
    assert torch.equal(out, bare_out)
    # some CUDA backward kernels (pooling) use atomics: where two bare runs differ
    # bitwise, ask the probe run only to agree as closely as those two do
    deterministic = all(torch.equal(a, b) for a, b in zip(bare_grads, bare2_grads, strict=True))
    for g, b in zip(grads, bare_grads, strict=True):
        if deterministic:
            assert torch.equal(g, b)
        else:
            torch.testing.assert_close(g, b, rtol=1e-12, atol=1e-15)


def test_no_host_sync_in_hooks(problem: Problem) -> None:
    model, x = make(problem)
    model, x = model.float().cuda(), x.float().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with gp.Probe(model) as probe:
        probe.watch(opt)
        for _ in range(2):
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                loss = loss_fn(model(x))
                loss.backward()
            finally:
                torch.cuda.set_sync_debug_mode("default")
            probe.step()  # the one batched read-back
            torch.cuda.set_sync_debug_mode("error")
            try:
                opt.step()
                opt.zero_grad()
            finally:
                torch.cuda.set_sync_debug_mode("default")
    assert probe.recorded_steps == [0, 1]
    assert "update_to_weight_ratio" in set(probe.frame().quantity)
