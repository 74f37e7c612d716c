"""The compiled tanh kernels against float64 tanh, and their build and fallback paths.

The reference is numpy's float64 tanh (correctly rounded to well below a float32 ulp);
errors are counted in float32 ulps of the exact value. torch.tanh is measured the same way,
so the test also shows how the kernel compares with what it replaces.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from gradprobe import native
from gradprobe.native.build import find_compiler

MAX_ULP = 2.0  # the kernel's bound (docs/sweeps.md); measured 1.46


def _inputs() -> np.ndarray:
    """Every region of the kernel: both sides of the 0.5625 branch point, the exp range,
    the clamp at 9, tiny and subnormal values, both signs."""
    rng = np.random.default_rng(0)
    parts = [
        np.linspace(-12.0, 12.0, 1_200_001),
        np.geomspace(1e-38, 1.0, 20_000), -np.geomspace(1e-38, 1.0, 2_000),
        np.geomspace(1e-45, 1e-38, 200),  # subnormals
        0.5625 + np.linspace(-1e-3, 1e-3, 2_001),
        rng.normal(0.0, 3.0, 200_000),
    ]
    return np.concatenate(parts).astype(np.float32)


def _ulp_errors(got: np.ndarray, x: np.ndarray) -> np.ndarray:
    exact = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / ulp


def test_the_kernel_is_built_where_a_compiler_exists() -> None:
    if find_compiler() is None:
        assert not native.available()
        assert "no C compiler" in (native.unavailable_reason() or "")
    else:
        assert native.available(), native.unavailable_reason()


def test_tanh_is_within_two_ulp_of_exact() -> None:
    x = _inputs()
    got = native.tanh(torch.from_numpy(x)).numpy()
    errors = _ulp_errors(got, x)
    torch_errors = _ulp_errors(torch.tanh(torch.from_numpy(x)).numpy(), x)
    assert errors.max() <= MAX_ULP, f"max {errors.max():.2f} ulp at x={x[errors.argmax()]}"
    assert errors.mean() < 0.5  # mostly correctly rounded
    assert torch_errors.max() <= MAX_ULP  # the kernel it replaces, for scale


def test_tanh_special_values() -> None:
    x = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-40, -1e-40,
                      1e30, -1e30, 9.0, -9.0])
    got = native.tanh(x)
    assert torch.isnan(got[4])
    finite = torch.tensor([0, 1, 2, 3, 5, 6, 7, 8, 9, 10])
    assert torch.equal(got[finite], torch.tanh(x)[finite])
    assert torch.signbit(got[1]) and not torch.signbit(got[0])  # -0 stays -0


def test_tanh_writes_out_and_in_place() -> None:
    x = torch.randn(3, 50, 7)
    expected = native.tanh(x)
    out = torch.empty_like(x)
    assert native.tanh(x, out=out) is out
    assert torch.equal(out, expected)
    y = x.clone()
    native.tanh(y, out=y)
    assert torch.equal(y, expected)


@pytest.mark.parametrize("make", [
    lambda: torch.randn(40, 30).t(),  # not contiguous
    lambda: torch.randn(100, dtype=torch.float64),  # not float32
], ids=["strided", "float64"])
def test_other_tensors_get_torch_tanh(make) -> None:
    x = make()
    assert torch.equal(native.tanh(x), torch.tanh(x))


@pytest.mark.parametrize("threads", [1, 2])
def test_bias_tanh_adds_the_bias_then_applies_tanh(threads: int) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        z = torch.randn(6, 300, 50)  # above the kernel's parallel threshold
        bias = torch.randn(6, 50)
        expected_z = z + bias.unsqueeze(1)
        h = native.bias_tanh(z, bias)
        assert torch.equal(z, expected_z)  # one float addition: bitwise
        assert torch.equal(h, native.tanh(expected_z))
        w = torch.randn(6, 300, 50)
        w0 = w.clone()
        assert native.bias_tanh(w, bias, out=w).data_ptr() == w.data_ptr()
        assert torch.equal(w, native.tanh(w0 + bias.unsqueeze(1)))
    finally:
        torch.set_num_threads(previous)


def test_bias_tanh_rejects_a_mismatched_bias() -> None:
    with pytest.raises(ValueError, match="bias has shape"):
        native.bias_tanh(torch.zeros(2, 3, 4), torch.zeros(2, 5))


def _run(code: str, env: dict[str, str]) -> str:
    full = {**os.environ, **env}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


PROBE = """
    import torch
    from gradprobe import native
    x = torch.linspace(-4, 4, 101)
    print(native.available(), native.unavailable_reason(),
          bool(torch.allclose(native.tanh(x), torch.tanh(x), rtol=1e-6, atol=0)))
"""


def test_disabled_by_environment_falls_back_to_torch(tmp_path: Path) -> None:
    out = _run(PROBE, {"GRADPROBE_NATIVE": "0", "GRADPROBE_CACHE_DIR": str(tmp_path)})
    assert out == "False disabled by GRADPROBE_NATIVE=0 True"
    assert not list(tmp_path.iterdir())  # nothing built


def test_without_a_compiler_falls_back_to_torch(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {"PATH": str(empty), "CC": "", "GRADPROBE_CACHE_DIR": str(tmp_path / "cache")}
    out = _run(PROBE, env)
    assert out.startswith("False no C compiler found") and out.endswith("True")


def test_the_library_is_built_once_and_cached(tmp_path: Path) -> None:
    if find_compiler() is None:
        pytest.fail("a C compiler is on PATH in CI (.ci/run installs gcc)")
    env = {"GRADPROBE_CACHE_DIR": str(tmp_path)}
    assert _run(PROBE, env) == "True None True"
    built = list(tmp_path.glob("kernels-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    assert _run(PROBE, env) == "True None True"
    assert [p.stat().st_mtime_ns for p in tmp_path.glob("kernels-*.so")] == [stamp]
    assert not list(tmp_path.glob(".*.tmp"))  # no partial file left behind


def test_partly_overlapping_out_is_refused_as_torch_refuses_it() -> None:
    base = torch.randn(200)
    with pytest.raises(RuntimeError, match="single memory location"):
        native.tanh(base[:150], out=base[50:])


def test_an_unwritable_cache_builds_in_a_temporary_folder(tmp_path: Path) -> None:
    if find_compiler() is None:
        pytest.fail("a C compiler is on PATH in CI (.ci/run installs gcc)")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert _run(PROBE, {"GRADPROBE_CACHE_DIR": str(blocker / "cache")}) == "True None True"


def test_threads_asking_at_once_share_one_build(tmp_path: Path) -> None:
    if find_compiler() is None:
        pytest.fail("a C compiler is on PATH in CI (.ci/run installs gcc)")
    code = """
        import threading, torch
        from gradprobe import native
        x = torch.linspace(-4, 4, 101)
        ok = []
        def ask():
            ok.append(bool(torch.allclose(native.tanh(x), torch.tanh(x), rtol=1e-6, atol=0)))
        threads = [threading.Thread(target=ask) for _ in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(native.available(), ok.count(True))
    """
    assert _run(code, {"GRADPROBE_CACHE_DIR": str(tmp_path)}) == "True 8"
    assert len(list(tmp_path.glob("kernels-*.so"))) == 1
    assert not list(tmp_path.glob(".*.tmp"))
