"""``gradprobe diagnose``: exit codes, JSON, checkpoints, and one-line errors."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from gradprobe.cli import app

runner = CliRunner()

NETS = textwrap.dedent(
    """
    import torch
    from torch import nn

    def sick():
        layers = [nn.Linear(64, 24), nn.Sigmoid()]
        for _ in range(14):
            layers += [nn.Linear(24, 24), nn.Sigmoid()]
        return nn.Sequential(*layers, nn.Linear(24, 10))

    def healthy():
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def not_a_module():
        return 3

    def broken():
        raise RuntimeError("boom")
    """
)


@pytest.fixture
def nets(tmp_path):
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_sick_model_exits_1_and_healthy_0(nets):
    sick = invoke("diagnose", f"{nets}:sick")
    assert sick.exit_code == 1, sick.output
    assert "[error] vanishing_gradient" in sick.output
    ok = invoke("diagnose", f"{nets}:healthy", "--data", "iris")
    assert ok.exit_code == 2  # iris has 4 features: the model cannot run on it
    assert "the model failed on inputs" in ok.output
    ok = invoke("diagnose", f"{nets}:healthy")
    assert ok.exit_code == 0, ok.output
    assert "healthy: no findings" in ok.output


def test_json_output(nets):
    result = invoke("diagnose", f"{nets}:sick", "--json", "--steps", "30")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["healthy"] is False
    kinds = [f["kind"] for f in data["findings"]]
    assert kinds[0] == "vanishing_gradient"
    for f in data["findings"]:
        assert set(f) == {"kind", "severity", "layers", "evidence", "cause", "recommendation"}
    assert data["evidence"]["training"]["steps"] == 30
    assert "repair" not in data


def test_repair_flag_adds_the_table(nets):
    result = invoke("diagnose", f"{nets}:sick", "--repair", "--budget", "3", "--markdown")
    assert result.exit_code == 1
    assert "## Repair" in result.output and "| rank | candidate |" in result.output
    assert "not tried: **init critical (theory)**" in result.output


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit's notices
def test_checkpoints(nets, tmp_path):
    torch.manual_seed(0)
    from torch import nn

    trained = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        trained[0].bias.fill_(-50.0)  # every unit dead
    ckpt = tmp_path / "dead.pt"
    torch.save(trained.state_dict(), ckpt)
    result = invoke("diagnose", f"{nets}:healthy", "--checkpoint", ckpt)
    assert result.exit_code == 1 and "dead_relu" in result.output
    same = invoke("diagnose", ckpt, "--arch", f"{nets}:healthy")
    assert same.exit_code == 1 and "dead_relu" in same.output
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": trained.state_dict(), "epoch": 3}, wrapped)
    assert invoke("diagnose", f"{nets}:healthy", "--checkpoint", wrapped).exit_code == 1
    script = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(trained), script)
    assert invoke("diagnose", script, "--arch", f"{nets}:healthy").exit_code == 1
    alone = invoke("diagnose", script)
    assert alone.exit_code == 2 and "--arch" in alone.output
    mismatch = invoke("diagnose", f"{nets}:sick", "--checkpoint", ckpt)
    assert mismatch.exit_code == 2 and "does not fit" in mismatch.output


class Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_arbitrary_pickles_are_never_loaded(nets, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, path)
    result = invoke("diagnose", f"{nets}:healthy", "--checkpoint", path)
    assert result.exit_code == 2
    assert "unpickled!" not in result.output
    assert "weights_only" in result.output


@pytest.mark.parametrize(
    ("target", "message"),
    [("missing.py:sick", "model file not found"), ("{nets}:nope", "has no 'nope'"),
     ("{nets}:not_a_module", "returned int"), ("{nets}:broken", "boom"),
     ("nosuchfile.pt", "model not found")],
)
def test_bad_input_exits_2_with_one_line(nets, target, message):
    result = invoke("diagnose", target.format(nets=nets))
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_data_exits_2(nets):
    result = invoke("diagnose", f"{nets}:healthy", "--data", "nosuch")
    assert result.exit_code == 2 and "unknown dataset" in result.output


def test_help_describes_the_command():
    result = invoke("diagnose", "--help")
    assert result.exit_code == 0
    for flag in ("--data", "--steps", "--repair", "--json", "--checkpoint", "--arch"):
        assert flag in result.output
