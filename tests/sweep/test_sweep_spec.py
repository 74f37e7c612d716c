"""Sweep specs and their expansion into configurations."""

from __future__ import annotations

import pytest

from gradprobe.errors import UserError
from gradprobe.sweeps.grid import config_key, display_value, expand, short_names
from gradprobe.sweeps.spec import load_sweep_spec

ISSUE_EXAMPLE = {
    "name": "init-study",
    "base": {
        "net": {"kind": "mlp", "depth": 10, "width": 64, "activation": "tanh",
                "init": "xavier_normal"},
        "data": {"name": "digits"},
        "train": {"optimizer": "sgd", "lr": 0.05, "steps": 50, "batch_size": 128},
    },
    "grid": {
        "net.activation": ["sigmoid", "tanh", "relu", "leaky_relu"],
        "net.init": ["xavier_normal", "he_normal", {"name": "normal", "sigma_w2": 1.5}],
        "train.seed": [0, 1, 2],
    },
}


def test_grid_is_cartesian_first_key_slowest() -> None:
    configs = expand(load_sweep_spec(ISSUE_EXAMPLE))
    assert len(configs) == 36 == load_sweep_spec(ISSUE_EXAMPLE).size()
    first, second, fourth = configs[0], configs[1], configs[3]
    assert first.values == {"net.activation": "sigmoid", "net.init": "xavier_normal",
                            "train.seed": 0}
    assert second.values["train.seed"] == 1 and fourth.values["net.init"] == "he_normal"
    last = configs[-1]
    assert last.spec.net.activation.name == "leaky_relu"
    assert last.spec.net.init.label() == "normal(sigma_w2=1.5)"
    assert last.spec.train.seed == 2 and last.spec.net.depth == 10
    assert last.name == "init-study[activation=leaky_relu,init=normal(sigma_w2=1.5),seed=2]"
    assert len({c.key for c in configs}) == 36


def test_zip_entries_advance_together_and_cross_the_grid() -> None:
    spec = load_sweep_spec({
        "name": "z", "base": {"data": {"name": "iris"}},
        "grid": {"net.activation": ["tanh", "relu"]},
        "zip": {"net.depth": [3, 5, 7], "train.lr": [0.1, 0.05, 0.02]},
    })
    configs = expand(spec)
    assert len(configs) == 6
    pairs = {(c.spec.net.depth, c.spec.train.lr) for c in configs}
    assert pairs == {(3, 0.1), (5, 0.05), (7, 0.02)}
    assert spec.swept_keys() == ["net.activation", "net.depth", "train.lr"]


def test_several_zip_axes() -> None:
    spec = load_sweep_spec({"name": "z", "zip": [
        {"net.depth": [3, 5], "net.width": [8, 16]},
        {"train.seed": [0, 1, 2], "train.lr": [0.1, 0.2, 0.3]},
    ]})
    assert len(expand(spec)) == 6


def test_choice_parameters_by_dotted_path() -> None:
    spec = load_sweep_spec({"name": "p", "base": {"net": {"init": "normal"}},
                            "grid": {"net.init.sigma_w2": [0.5, 2.0]}})
    configs = expand(spec)
    assert [c.spec.net.init.params for c in configs] == [{"sigma_w2": 0.5}, {"sigma_w2": 2.0}]
    assert configs[0].name == "p[sigma_w2=0.5]"


def test_config_key_ignores_name_and_where_a_value_is_written() -> None:
    in_grid = expand(load_sweep_spec({"name": "a", "grid": {"net.depth": [3]}}))[0]
    in_base = expand(load_sweep_spec({"name": "b", "base": {"net": {"depth": 3}}}))[0]
    assert in_grid.key == in_base.key == config_key(in_base.spec)
    other = expand(load_sweep_spec({"name": "a", "grid": {"net.depth": [4]}}))[0]
    assert other.key != in_grid.key


@pytest.mark.parametrize("spec, message", [
    ({"name": "s", "grid": {"net.dpth": [3]}}, "net.dpth: unknown key"),
    ({"name": "s", "grid": {"net.activation": ["swish"]}}, "unknown activation 'swish'"),
    ({"name": "s", "grid": {"net.depth": []}}, "has no values"),
    ({"name": "s", "zip": {"net.depth": [2, 3], "train.lr": [0.1]}}, "equal lengths"),
    ({"name": "s", "grid": {"net.depth": [2]}, "zip": {"net.depth": [3]}}, "swept twice"),
    ({"name": "s", "grid": {"train.seed": [1, 1]}}, "are the same experiment"),
    ({"name": "s", "grid": {"name": ["x"]}}, "cannot be swept"),
    ({"name": "s", "base": {"net": {"depth": 0}}}, "configuration s: net.depth"),
    ({"name": "s", "grd": {}}, "grd: unknown key in a sweep spec (allowed: name, base"),
    ({"name": "s", "group_size": 0}, "group_size"),
])
def test_bad_sweeps_fail_with_one_line(spec: dict, message: str) -> None:
    with pytest.raises(UserError, match=None) as info:
        expand(load_sweep_spec(spec))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_file_and_overrides(tmp_path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("base: {net: {depth: 3}}\ngrid: {train.seed: [0, 1]}\n")
    spec = load_sweep_spec(path, ["base.train.steps=7", "group_size=8",
                                  "grid.net.init.sigma_w2=[1.0, 2.0]", "base.net.init=normal"])
    assert spec.name == "study"  # from the file name
    assert spec.group_size == 8
    assert spec.grid == {"train.seed": [0, 1], "net.init.sigma_w2": [1.0, 2.0]}
    configs = expand(spec)
    assert len(configs) == 4 and {c.spec.train.steps for c in configs} == {7}


def test_display_values_and_short_names() -> None:
    assert display_value({"name": "normal", "sigma_w2": 1.5}) == "normal(sigma_w2=1.5)"
    assert display_value({"name": "tanh"}) == "tanh"
    assert display_value([8, 16]) == "[8, 16]"
    assert short_names(["train.seed", "data.seed", "net.depth"]) == {
        "train.seed": "train.seed", "data.seed": "data.seed", "net.depth": "depth"}
