"""Size caps and the memory estimate, tested under ``ulimit -v`` so a failure cannot eat the
machine: a command that tried to allocate would die of MemoryError (a different message)
instead of swapping. Importing torch maps about 1 GiB; the limit leaves about 2 GiB more.
"""

from __future__ import annotations

import pytest
import yaml

from gradprobe import budget, limits
from gradprobe.errors import UserError
from gradprobe.spec import load_spec

from .cli_batch import run_batch
from .conftest import tiny_spec

ULIMIT_KB = 3_000_000
UNDER_ULIMIT = ["bash", "-c", f'ulimit -v {ULIMIT_KB} && exec "$0" "$@"']


def test_caps_refuse_up_front_under_ulimit(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(**{"data.name": "digits", "train.steps": 2})))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "huge", "base": tiny_spec(), "grid": {
        key: list(range(1, 101)) for key in ("train.seed", "net.depth", "net.width",
                                             "train.record_every")}}))
    store = str(tmp_path / "s.sqlite")
    run = ["run", str(spec), "--store", store, "-q", "--set"]
    cases = [  # (argv, what the one line must say)
        ([*run, "net.width=100000", "--set", "net.depth=10"], "needs about"),
        # fits the machine's memory, not 3 GB of address space: the estimate reads ulimit -v
        ([*run, "net.width=20000", "--set", "net.depth=4"], "ulimit -v"),
        ([*run, "net.width=1000000000"], "net.width"),
        ([*run, "data={name: teacher, n_samples: 100000000000}"], "n_samples"),
        ([*run, "data={name: teacher, n_samples: 10000000, n_features: 10000}"],
         "needs about"),
        ([*run, "train.steps=10000000000000000000000"], "train.steps"),
        (["sweep", str(sweep), "--store", store], "configurations"),
        (["theory", "-a", "tanh", "--sigma-w2", "1", "--sigma-b2", "0", "--depth",
          "100000000"], "--depth"),
    ]
    results = run_batch([{"argv": argv, "timeout": 120} for argv, _ in cases],
                        prefix=UNDER_ULIMIT)
    for (argv, word), res in zip(cases, results, strict=True):
        lines = res["stderr"].strip().splitlines()
        assert res["code"] == 2, (argv, res)
        assert len(lines) == 1 and word in lines[0], (argv, res["stderr"])


def test_estimate_counts_parameters_like_torch():
    """The estimate's parameter count equals the built network's (independent: torch)."""
    from gradprobe.nets.plain import build

    for net in ({"depth": 5, "width": 48}, {"depth": 3, "width": [20, 7]},
                {"kind": "cnn", "depth": 4, "width": 6}):
        spec = load_spec({"net": net, "train": {"optimizer": "sgd", "batch_size": 1}})
        in_shape = (1, 8, 8)
        model = build(spec.net, in_shape, 10)
        n_params = sum(p.numel() for p in model.parameters())
        # batch 1 and one sample: what remains besides 2 copies of the parameters is small
        got = budget.experiment_bytes(spec, in_shape, 10, 1)
        extra = 4 * (1 * (sum(spec.net.hidden_widths()) * (64 if net.get("kind") else 1) + 10)
                     * 6) + 64 * 12
        assert got - extra == 4 * 2 * n_params


def test_memory_budget_follows_the_environment(monkeypatch):
    monkeypatch.setenv("GRADPROBE_MAX_MEMORY_GB", "0.5")
    assert limits.memory_budget() <= 2**29
    with pytest.raises(UserError, match="needs about 1 GiB"):
        limits.check_memory(2**30, "this")
    monkeypatch.setenv("GRADPROBE_MAX_MEMORY_GB", "lots")
    with pytest.raises(UserError, match="GRADPROBE_MAX_MEMORY_GB"):
        limits.memory_budget()


def test_alias_counting_is_exact_and_cheap():
    leaf = list(range(10))
    level = leaf
    for _ in range(8):  # 10**9 values once copied out, 90 objects in memory
        level = [level] * 10
    expected = sum(10**k for k in range(9)) + 10**9  # one per list plus the leaves
    assert limits.count_nodes(level) == expected
    with pytest.raises(UserError, match="expands to"):
        limits.check_nodes({"a": level}, "spec")
