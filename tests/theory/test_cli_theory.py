"""The ``theory`` sub-app, invoked directly (the lead mounts it as ``gradprobe theory``)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gradprobe.cli.theory import parse_params, theory_app

runner = CliRunner()

KEYS = ["activation", "sigma_w2", "sigma_b2", "q_star", "chi1", "c_star",
        "xi_q", "xi_c", "xi_grad", "phase", "status"]


def test_json_output_has_exactly_the_keys():
    result = runner.invoke(
        theory_app, ["--activation", "tanh", "--sigma-w2", "1.5", "--sigma-b2", "0.05", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data) == KEYS
    assert data["phase"] == "ordered" and data["status"] == "converged"
    assert data["chi1"] == pytest.approx(0.938636, rel=1e-5)


def test_json_infinities_and_nulls():
    out = runner.invoke(theory_app, ["-a", "relu", "--sigma-w2", "2", "--sigma-b2", "0", "--json"])
    data = json.loads(out.stdout)
    assert data["xi_grad"] == "inf" and data["phase"] == "critical"
    out = runner.invoke(theory_app, ["-a", "relu", "--sigma-w2", "3", "--sigma-b2", "0.1",
                                     "--json", "--depth", "50"])
    data = json.loads(out.stdout)
    assert data["q_star"] is None and data["status"] == "diverges" and list(data) == KEYS


def test_text_output_with_depth_and_params():
    result = runner.invoke(theory_app, ["-a", "leaky_relu", "--param", "slope=0.5",
                                        "--sigma-w2", "1.6", "--sigma-b2", "0", "--depth", "20"])
    assert result.exit_code == 0, result.output
    assert "leaky_relu(slope=0.5)" in result.stdout
    assert "depth 20: log10" in result.stdout and "chi_l" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-a", "foo", "--sigma-w2", "1", "--sigma-b2", "0"], "unknown activation 'foo'"),
        (["-a", "tanh", "--sigma-w2", "-1", "--sigma-b2", "0"], "sigma_w2 must be"),
        (["-a", "tanh", "--sigma-w2", "1", "--sigma-b2", "-0.5"], "sigma_b2 must be"),
        (["-a", "tanh", "--sigma-w2", "1"], "needs --sigma-b2"),
        (["-a", "tanh", "--sigma-w2", "1", "--sigma-b2", "0", "--param", "x"], "name=value"),
        (["-a", "tanh", "--sigma-w2", "1", "--sigma-b2", "0", "--param", "slope=1"],
         "no parameter 'slope'"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, message):
    result = runner.invoke(theory_app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_phase_subcommand_draws(tmp_path):
    out = tmp_path / "phase.png"
    result = runner.invoke(theory_app, ["phase", "--activation", "tanh", "-o", str(out),
                                        "--n", "40"])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000 and "critical sigma_w2" in result.stdout


def test_phase_bad_input(tmp_path):
    result = runner.invoke(theory_app, ["phase", "-a", "tanh", "-o", str(tmp_path / "p.png"),
                                        "--sigma-w2-range", "3,1"])
    assert result.exit_code == 2 and "LOW must be below HIGH" in result.output
    result = runner.invoke(theory_app, ["phase", "-o", str(tmp_path / "p.txt")])
    assert result.exit_code == 2 and ".png" in result.output


def test_parse_params():
    assert parse_params(["slope=0.2", "alpha = 1"]) == {"slope": 0.2, "alpha": 1.0}


def test_mounted_under_the_main_cli():
    from gradprobe.cli import app

    result = runner.invoke(app, ["theory", "-a", "erf", "--sigma-w2", "1", "--sigma-b2",
                                 "0.05", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["activation"] == "erf"
    bad = runner.invoke(app, ["theory", "-a", "nope", "--sigma-w2", "1", "--sigma-b2", "0"])
    assert bad.exit_code == 2
