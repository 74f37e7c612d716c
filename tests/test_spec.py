import json

import pytest

from gradprobe.errors import UserError
from gradprobe.spec import ExperimentSpec, load_spec


def test_defaults_and_choice_forms():
    spec = load_spec({"net": {"init": {"name": "normal", "sigma_w2": 1.5},
                              "activation": {"name": "leaky_relu", "slope": 0.1}}})
    assert spec.net.init.name == "normal" and spec.net.init.params == {"sigma_w2": 1.5}
    assert spec.net.activation.params == {"slope": 0.1}
    assert load_spec({"net": {"init": "he_normal"}}).net.init.params == {}


def test_yaml_and_json_files_round_trip(tmp_path):
    yaml_file = tmp_path / "spec.yaml"
    yaml_file.write_text("net:\n  depth: 7\n  activation: {name: elu, alpha: 0.5}\n"
                         "train:\n  steps: 3\n")
    spec = load_spec(yaml_file)
    assert spec.net.depth == 7 and spec.net.activation.params == {"alpha": 0.5}
    json_file = tmp_path / "spec.json"
    json_file.write_text(json.dumps(spec.to_dict()))
    assert load_spec(json_file) == spec


def test_overrides_by_dotted_path():
    spec = load_spec({}, ["net.depth=30", "net.init=orthogonal", "net.init.gain=2.0",
                          "train.lr=0.1", "data.name=wine"])
    assert spec.net.depth == 30
    assert spec.net.init.name == "orthogonal" and spec.net.init.params == {"gain": 2.0}
    assert spec.train.lr == 0.1 and spec.data.name == "wine"


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"net": {"dpth": 3}}, "net.dpth: unknown key (allowed: kind, depth"),
        ({"trian": {}}, "trian: unknown key (allowed: name, net, data, train)"),
        ({"net": {"activation": "swish"}}, "unknown activation 'swish' (allowed: sigmoid"),
        ({"net": {"init": "glorot"}}, "unknown init 'glorot' (allowed: xavier_normal"),
        ({"net": {"depth": 0}}, "net.depth: Input should be greater than or equal to 1"),
        ({"net": {"norm": "group"}}, "net.norm: must be one of 'none', 'batch' or 'layer'"),
        ({"train": {"lr": -1}}, "train.lr: Input should be greater than 0"),
        ({"net": {"init": {"name": "normal"}}}, "needs exactly one of std, sigma_w2"),
        ({"net": {"activation": {"name": "relu", "slope": 1}}}, "has no parameter 'slope'"),
        ({"net": {"depth": 3, "width": [4]}}, "width list has 1 entries; depth 3 needs 2"),
        ({"data": {"name": "csv"}}, "data 'csv' needs a path"),
        ({"data": {"name": "mnist"}}, "data.name: must be one of 'digits'"),
    ],
)
def test_bad_specs_give_one_line_naming_the_field(data, expected):
    with pytest.raises(UserError) as info:
        load_spec(data)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="must look like key.path=value"):
        load_spec({}, ["net.depth"])
    with pytest.raises(UserError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("net: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_spec(bad)


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("net: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserError):
        load_spec(evil)


def test_describe_names_the_configuration():
    spec = ExperimentSpec.model_validate({"net": {"depth": 30, "activation": "sigmoid",
                                                  "norm": "batch"}})
    assert spec.net.describe() == "30-layer sigmoid MLP, xavier_normal + batch norm"
