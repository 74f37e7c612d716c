"""``gradprobe.theory.predict``: one entry above the mean-field maps and the network reader."""

from __future__ import annotations

import pytest
from torch import nn

from gradprobe.errors import UserError
from gradprobe.spec import NetSpec
from gradprobe.theory import meanfield, predict
from gradprobe.theory.network import predict_network

from .helpers import plain_mlp


def test_names_go_to_the_maps_and_networks_to_the_reader():
    by_name = predict("tanh", 1.5, 0.05, depth=12, q0=0.7, params={})
    direct = meanfield.predict("tanh", 1.5, 0.05, depth=12, q0=0.7)
    assert by_name.to_dict() == direct.to_dict()
    assert by_name.log10_grad_ratio == direct.log10_grad_ratio

    net = plain_mlp(nn.Tanh, 1.5, 0.05, depth=6, width=64, seed=2)
    assert predict(net).to_dict() == predict_network(net).prediction.to_dict()
    spec = NetSpec(depth=8, width=64, activation="relu", init="he_normal")
    assert predict(spec, q0=2.0).chi_path.tolist() == (
        predict_network(spec, q0=2.0).prediction.chi_path.tolist()
    )


def test_variances_and_options_come_from_the_network():
    net = plain_mlp(nn.Tanh, 1.0, 0.0, depth=3, width=32)
    with pytest.raises(UserError, match="come from the model or spec"):
        predict(net, 1.5, 0.1)
    with pytest.raises(UserError, match="come from the model or spec"):
        predict(net, params={"slope": 0.1})


def test_the_maps_alone_refuse_a_network_and_say_where_it_goes():
    with pytest.raises(UserError, match="gradprobe.theory.predict"):
        meanfield.predict(plain_mlp(nn.Tanh, 1.0, 0.0, depth=3, width=32))
