"""The one-pass (native) reductions against torch's and against float64 brute force.

The probe takes its sums, sums of squares and counts from :mod:`gradprobe.native.reduce`
where a compiled library is available, else from torch. Both paths must give every
quantity to 1e-6 relative, on float32 and float64 models, tiny (underflowing) gradients,
non-contiguous tensors (which take torch's path) and with no library at all.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from probe_helpers import ZOO, Problem, assert_frames_match, clone, loss_fn, make, reference_frame
from torch import nn

import gradprobe as gp
from gradprobe.native import available, build
from gradprobe.native import reduce as native
from gradprobe.native.build import find_compiler
from gradprobe.probe import tensors
from gradprobe.probe.quantities import UNDERFLOW_SUM_SQ


@pytest.fixture
def no_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """The native library unavailable: every reduction takes torch's path."""
    monkeypatch.setattr(build, "load", lambda: None)


def _run(model: nn.Module, x: torch.Tensor, steps: int = 3) -> pd.DataFrame:
    """Every quantity over ``steps`` SGD steps (momentum, watched), every step recorded."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with gp.Probe(model) as probe:
        probe.watch(opt)
        for _ in range(steps):
            loss_fn(model(x)).backward()
            probe.step()
            opt.step()
            opt.zero_grad()
    return probe.frame()


def _torch_path(model: nn.Module, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch
                ) -> pd.DataFrame:
    with monkeypatch.context() as m:
        m.setattr(build, "load", lambda: None)
        return _run(model, x)


def test_the_reductions_are_built_where_a_compiler_exists() -> None:
    if find_compiler() is None:
        assert native.moments(torch.ones(3)) is None
    else:
        assert available(), build.unavailable_reason()
        assert native.moments(torch.ones(3)) == (3.0, 3.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_path_equals_torch_path_on_every_quantity(
    problem: Problem, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x = make(problem)
    model, x = model.to(dtype), x.to(dtype)
    fused = _run(clone(model), x)
    reference = _torch_path(clone(model), x, monkeypatch)
    assert set(fused.quantity) >= {"update_to_weight_ratio", "weight_grad_norm"}
    # float32: both paths round differently (float32 BLAS vs float32 lanes summed in
    # float64), each within ~1e-7 of the exact sums
    if dtype == torch.float64:
        assert_frames_match(fused, reference, rtol=1e-6)
    else:
        _assert_float32_frames_match(fused, reference)


def _assert_float32_frames_match(fused: pd.DataFrame, reference: pd.DataFrame) -> None:
    """1e-6 relative; the mean and std of a layer's output entries to 1e-6 of their root
    mean square (std's error grows as mean**2 / std, see PreactStd)."""
    key = ["step", "layer", "depth", "quantity"]
    merged = fused.merge(reference, on=key, suffixes=("_f", "_t"), how="outer", indicator=True)
    assert (merged["_merge"] == "both").all()
    ref = reference.set_index(["step", "layer", "quantity"])["value"]
    for row in merged.itertuples():
        a, b = row.value_f, row.value_t
        abs_tol = 1e-12
        if row.quantity in ("preact_mean", "preact_std"):
            mean, std = ref[(row.step, row.layer, "preact_mean")], ref[(row.step, row.layer,
                                                                         "preact_std")]
            ms = mean**2 + std**2  # mean of the squared entries
            abs_tol = 1e-6 * (math.sqrt(ms) if row.quantity == "preact_mean" else ms / std)
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=abs_tol), (
            f"{row.layer} {row.quantity} step {row.step}: fused {a!r}, torch {b!r}")


def test_no_library_falls_back_to_torch_and_matches_brute_force(
    problem: Problem, no_library: None
) -> None:
    model, x = make(problem)
    assert native.moments(torch.ones(3)) is None  # the library is out of reach
    ref = reference_frame(clone(model), x)
    with gp.Probe(model) as probe:
        loss_fn(model(x)).backward()
        probe.step()
    assert_frames_match(probe.frame(), ref, rtol=1e-6)


def test_fused_path_matches_brute_force(problem: Problem) -> None:
    model, x = make(problem)
    ref = reference_frame(clone(model), x)
    with gp.Probe(model) as probe:
        loss_fn(model(x)).backward()
        probe.step()
    assert_frames_match(probe.frame(), ref, rtol=1e-6)


@pytest.mark.parametrize("problem", [p for p in ZOO if p.id in ("cnn", "residual")],
                         ids=lambda p: p.id)
def test_non_contiguous_tensors_take_torch_path_and_stay_exact(problem: Problem) -> None:
    model, x = make(problem)  # channels_last: conv outputs and gradients not contiguous
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    ref = reference_frame(clone(model), x)
    with gp.Probe(model) as probe:
        loss_fn(model(x)).backward()
        probe.step()
    assert_frames_match(probe.frame(), ref, rtol=1e-6)


# ------------------------------------------------------------------ the kernels themselves

SIZES = [1, 63, 64, 513, 4096 + 7, 70_001, 300_000]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_moments_within_5e7_of_float64(n: int, dtype: torch.dtype) -> None:
    t = (torch.randn(n, dtype=torch.float64) * 3 + 0.5).to(dtype)
    got = native.moments(t)
    if got is None:
        pytest.skip(f"no native library: {build.unavailable_reason()}")
    exact = t.double()
    assert math.isclose(got[1], float(exact.pow(2).sum()), rel_tol=5e-7)
    assert math.isclose(got[0], float(exact.sum()), rel_tol=0,
                        abs_tol=5e-7 * float(exact.abs().sum()))


def test_many_sums_of_squares_in_one_call_equal_one_by_one() -> None:
    torch.manual_seed(0)
    ts = [torch.randn(n) * 3 for n in SIZES] + [torch.full((9,), 1e-25)]  # tiny: float64
    got = native.sum_sq_many(ts, UNDERFLOW_SUM_SQ)
    if got is None:
        pytest.skip(f"no native library: {build.unavailable_reason()}")
    assert got == [native.sum_sq(t, UNDERFLOW_SUM_SQ) for t in ts]  # the same kernel
    for t, value in zip(ts, got, strict=True):
        assert math.isclose(value, float(t.double().pow(2).sum()), rel_tol=5e-7)
    # one tensor the kernel cannot take (float64, non-contiguous, empty): all left to torch
    for odd in (torch.ones(3, dtype=torch.float64), torch.ones(4, 4).t(), torch.empty(0)):
        assert native.sum_sq_many([ts[0], odd]) is None
    assert tensors.sum_sq_each([ts[0], torch.ones(3, dtype=torch.float64)]) == [
        native.sum_sq(ts[0], UNDERFLOW_SUM_SQ), 3.0]


def test_kernel_results_do_not_depend_on_threads() -> None:
    t = torch.randn(1_000_003)  # chunks of 65536 elements and more, on 1 or 2 threads
    a = torch.relu(t[:1_000_000]).view(1000, 1000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.moments(t), native.counts(a, True)
        torch.set_num_threads(2)
        two = native.moments(t), native.counts(a, True)
    finally:
        torch.set_num_threads(threads)
    assert one == two


def test_tiny_entries_are_summed_in_float64() -> None:
    t = torch.full((1000,), 1e-25)
    got = native.sum_sq(t, UNDERFLOW_SUM_SQ)
    if got is None:
        pytest.skip(f"no native library: {build.unavailable_reason()}")
    assert math.isclose(got, 1000 * float(torch.tensor(1e-25).double()) ** 2, rel_tol=1e-12)
    assert float(tensors.torch_sum_sq(t)) == pytest.approx(got, rel=1e-12)


@pytest.mark.parametrize("shape", [(256, 33), (7,), (5, 3, 4, 2)])
@pytest.mark.parametrize("nonzero", [False, True])
def test_counts_equal_torch(shape: tuple[int, ...], nonzero: bool) -> None:
    torch.manual_seed(0)
    t = torch.randn(shape) * (torch.rand(shape) < 0.3)  # many exact zeros
    if t.ndim >= 2:
        t[:, 0] = 0.0  # a dead unit
    for dtype in (torch.float32, torch.float64):
        a = t.to(dtype) if nonzero else torch.relu(t.to(dtype))
        batched = a.ndim >= 2
        got = native.counts(a, batched, nonzero)
        if got is None:
            pytest.skip(f"no native library: {build.unavailable_reason()}")
        flags = (a != 0) if nonzero else (a > 0)
        per_unit = flags.reshape(a.shape[0], -1).sum(0) if batched else flags.reshape(-1)
        assert got == (float(flags.sum()), float((per_unit > 0).sum()))


def test_counts_skip_nan_as_torch_does() -> None:
    a = torch.relu(torch.randn(8, 5))
    a[:, 4] = 0.0
    a[3, 2] = a[5, 4] = float("nan")
    got = native.counts(a, batched=True)
    if got is None:
        pytest.skip(f"no native library: {build.unavailable_reason()}")
    per_unit = torch.sign(a).sum(0)  # the torch path (sign(NaN) is 0)
    assert got == (float(per_unit.sum()), float((per_unit > 0).sum()))
    assert got[1] == 4  # column 4: only a NaN, not alive


def test_copy_and_diff_sums_of_squares() -> None:
    w = torch.randn(300, 257)
    buf = torch.empty_like(w)
    got = native.copy_sum_sq(w, buf)
    if got is None:
        pytest.skip(f"no native library: {build.unavailable_reason()}")
    assert torch.equal(buf, w)
    assert math.isclose(got, float(w.double().pow(2).sum()), rel_tol=5e-7)
    after = w - 1e-3 * torch.randn_like(w)
    diff = native.diff_sum_sq(after, buf)
    assert math.isclose(diff, float((after - w).double().pow(2).sum()), rel_tol=5e-7)
    assert torch.equal(buf, w)  # the difference is not written anywhere
    # overlapping or mismatched tensors are left to torch
    assert native.diff_sum_sq(w, w) is None
    assert native.copy_sum_sq(w, torch.empty(3)) is None


def test_what_the_kernels_do_not_take() -> None:
    x = torch.randn(64, 32)
    assert native.moments(x.t()) is None  # non-contiguous
    assert native.moments(x.half()) is None  # half precision: torch, float32 accumulation
    assert native.moments(torch.empty(0)) is None
    assert native.counts(x.t(), batched=True) is None
    # and the probe's helpers then take torch's way, with the same numbers
    s, q = tensors.moments(x.t())
    assert math.isclose(float(s), float(x.double().sum()), abs_tol=1e-4)
    assert math.isclose(float(q), float(x.double().pow(2).sum()), rel_tol=1e-6)


def test_gradient_norms_are_those_at_step_after_clipping_and_accumulation() -> None:
    """The gradients' sums of squares taken at accumulation are used only if the gradient
    is unchanged at step(): clipped in place, replaced, or accumulated again, it is reread."""
    from gradprobe.probe.params import HOT_MIN_NUMEL

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 4))
    assert model[0].weight.numel() >= HOT_MIN_NUMEL > model[2].weight.numel()  # both ways
    x = torch.randn(32, 64)
    with gp.Probe(model, quantities=["weight_grad_norm", "bias_grad_norm"]) as probe:
        want = []
        for change in ("clip", "replace", "accumulate", "none"):
            model.zero_grad()
            loss_fn(model(x)).backward()
            if change == "clip":
                nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
            elif change == "replace":
                model[0].weight.grad = model[0].weight.grad * 3.0
            elif change == "accumulate":
                probe.end_micro_batch()
                loss_fn(model(2 * x)).backward()
            want.append({(m, kind): float(getattr(model[m], kind).grad.double().norm())
                         for m in (0, 2) for kind in ("weight", "bias")})
            probe.step()
    frame = probe.frame()
    for step, expected in enumerate(want):
        for (m, kind), value in expected.items():
            got = frame.query(f"step == {step} and layer == '{m}' and "
                              f"quantity == '{kind}_grad_norm'")["value"]
            assert math.isclose(float(got.iloc[0]), value, rel_tol=1e-6), (step, m, kind)


@pytest.mark.parametrize("shape", [(256, 256), (3, 5000), (1000, 3), (7, 2, 3, 5)])
def test_moments_counts_equal_moments_and_counts(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    t = torch.randn(shape) * (torch.rand(shape) < 0.5)
    got = native.moments_counts(t, batched=True)
    if got is None:
        pytest.skip(f"no native library: {build.unavailable_reason()}")
    s, q = native.moments(t)  # type: ignore[misc]
    assert math.isclose(got[0], s, rel_tol=1e-6, abs_tol=1e-6 * float(t.abs().sum()))
    assert math.isclose(got[1], q, rel_tol=1e-6)
    assert got[2:] == native.counts(torch.relu(t), batched=True)


class _Shifted(nn.Module):
    """Linear -> (in place: +shift, unless 0) -> ReLU (in place or not) -> Linear."""

    def __init__(self, shift: float, inplace: bool) -> None:
        super().__init__()
        self.fc, self.act, self.out = nn.Linear(6, 12), nn.ReLU(inplace=inplace), nn.Linear(12, 2)
        self.shift = shift
        self.relu_out: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(x)
        if self.shift:
            z.add_(self.shift)  # the ReLU's input is the layer's output, changed since
        h = self.act(z)
        self.relu_out.append(h.detach().clone())
        return self.out(h)


@pytest.mark.parametrize(("shift", "inplace"), [(0.0, False), (0.0, True), (0.7, False),
                                                (-0.7, True)])
def test_relu_counts_taken_with_the_layer_output_only_when_it_is_the_relu_input(
    shift: float, inplace: bool
) -> None:
    torch.manual_seed(0)
    model = _Shifted(shift, inplace)
    x = torch.randn(40, 6)
    with gp.Probe(model, quantities=["inactive_fraction", "dead_unit_fraction",
                                     "preact_mean"]) as probe:
        for _ in range(3):  # the first recorded step learns that fc feeds the ReLU
            model.zero_grad()
            model(x).pow(2).sum().backward()
            probe.step()
    frame = probe.frame()
    for step, h in enumerate(model.relu_out):
        rows = frame[(frame.step == step) & (frame.layer == "act")].set_index("quantity")
        active = h > 0
        assert rows.loc["inactive_fraction", "value"] == pytest.approx(
            1 - float(active.double().mean()), rel=1e-12, abs=1e-12)
        assert rows.loc["dead_unit_fraction", "value"] == pytest.approx(
            float((~active.any(0)).double().mean()), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("path", ["fused", "torch"])
def test_update_ratio_and_norm_exact_when_weights_change_between_passes(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy left by an update or the forward (and its |W|**2) is used at the next step
    only if the weights are unchanged: edited after the update, after the forward or after
    probe.step(), they are reread."""
    if path == "torch":
        monkeypatch.setattr(build, "load", lambda: None)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 3))
    x = torch.randn(32, 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    want_update, want_norm = [], []
    with gp.Probe(model, quantities=["update_to_weight_ratio", "weight_norm"]) as probe:
        probe.watch(opt)
        for t in range(6):
            loss_fn(model(x)).backward()
            if t == 4:  # between the forward (which took |W|**2) and probe.step()
                with torch.no_grad():
                    model[0].weight.mul_(0.5)
            want_norm.append(float(model[0].weight.detach().double().norm()))
            probe.step()
            if t == 2:  # between probe.step() and the optimizer step
                with torch.no_grad():
                    model[0].weight.mul_(1.5)
            before = model[0].weight.detach().double().clone()
            opt.step()
            opt.zero_grad()
            after = model[0].weight.detach().double()
            want_update.append(float((after - before).norm() / before.norm()))
            if t == 3:  # after the update, before the next probe.step()
                with torch.no_grad():
                    model[0].weight.add_(0.25)
    frame = probe.frame().query("layer == '0'").sort_values("step")
    got_update = frame[frame.quantity == "update_to_weight_ratio"]["value"].tolist()
    got_norm = frame[frame.quantity == "weight_norm"]["value"].tolist()
    assert len(got_update) == len(got_norm) == 6
    for g, w in zip(got_update + got_norm, want_update + want_norm, strict=True):
        assert math.isclose(g, w, rel_tol=1e-6)
