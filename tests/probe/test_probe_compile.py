"""torch.compile: the probe records through the original module, or says why not.

Compiled with ``backend="eager"`` (Dynamo's tracing without inductor's code generation,
which is slow on the CPU); the probe's handling does not depend on the backend.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from probe_helpers import assert_frames_match, loss_fn, reference_frame
from torch import nn

import gradprobe as gp


def small() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(),
                          nn.Linear(8, 2)).double()
    return model, torch.randn(16, 4, dtype=torch.float64)


def probe_steps(probe: gp.Probe, call: nn.Module, x: torch.Tensor, n: int) -> None:
    with probe:
        for _ in range(n):
            call.zero_grad()
            loss_fn(call(x)).backward()
            probe.step()


@pytest.mark.parametrize("how", ["torch.compile", "Module.compile"])
def test_compiled_model_that_already_ran_records_like_the_eager_one(how: str) -> None:
    model, x = small()
    ref = reference_frame(model, x)  # eager, before compiling
    if how == "torch.compile":
        call = torch.compile(model, backend="eager")
    else:
        model.compile(backend="eager")
        call = model
    compiled_forward = vars(call).get("forward")
    loss_fn(call(x)).backward()  # compiled and run before the probe comes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe = gp.Probe(call)
        probe_steps(probe, call, x, 2)
    frame = probe.frame()
    for step in (0, 1):
        got = frame[frame.step == step].assign(step=0).reset_index(drop=True)
        assert_frames_match(got, ref)
    # after the probe the compiled code is back in place
    assert vars(call).get("forward") is compiled_forward
    assert call._compiled_call_impl is not None or how == "torch.compile"


def test_probe_on_a_model_whose_compiled_copy_runs_warns_instead_of_recording_nothing() -> None:
    model, x = small()
    call = torch.compile(model, backend="eager")
    loss_fn(call(x)).backward()
    probe = gp.Probe(model)  # the user attached to the original, then calls the wrapper
    with pytest.warns(UserWarning, match="recorded no forward pass.*torch.compile wrapper"):
        probe_steps(probe, call, x, 1)


def test_a_step_without_forward_warns_once() -> None:
    model, x = small()
    with gp.Probe(model) as probe:
        with pytest.warns(UserWarning, match="step 0 recorded no forward pass"):
            probe.step()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            probe.step()
            loss_fn(model(x)).backward()
            probe.step()
    assert set(probe.frame().step) == {2}
