"""Bad inputs through the real CLI: each gets exit code 2, one stderr line, no traceback.

One case per class of failure in issue 13; the cases run in real processes (forked from
one Python start, see ``cli_batch.py``), and every case that touches the store checks that
the store's runs are intact afterwards.
"""

from __future__ import annotations

import gzip
import os
import socket
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import gradprobe as gp
from gradprobe.errors import UserError
from gradprobe.store import Store

from .cli_batch import run_batch
from .conftest import tiny_spec

MODELS = '''
import sys
import torch
from torch import nn

def exits():
    sys.exit(3)

def frozen():
    net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    net.requires_grad_(False)
    return net
'''


def _write_files(root: Path) -> dict[str, Path]:
    """Every bad file a case needs, under ``root``."""
    f: dict[str, Path] = {}

    def spec(name: str, data: dict) -> None:
        f[name] = root / f"{name}.yaml"
        f[name].write_text(yaml.safe_dump(data))

    good = tiny_spec(**{"train.steps": 2})
    spec("good", good)
    f["binary"] = root / "binary.yaml"
    f["binary"].write_bytes(bytes(range(256)) * 8)
    f["bomb"] = root / "bomb.yaml"
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, "
                     f"*{prev}, *{prev}, *{prev}]")
    f["bomb"].write_text("\n".join(lines) + "\nname: *i\n")
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 3)), np.arange(40) % 2
    np.savez(data / "complex.npz", x=x + 1j, y=y)
    np.savez(data / "nan.npz", x=np.where(x > 1.5, np.nan, x), y=y)
    np.savez(data / "scalar.npz", x=np.float64(1.0), y=np.float64(1.0))
    (data / "corrupt.npz").write_bytes(b"PK\x03\x04" + b"\x00garbage" * 50)
    (data / "strings.csv").write_text("a,b,target\n" + "".join(f"x{i},{i},{i % 2}\n"
                                                                for i in range(20)))
    header = struct.pack(">BBBBIII", 0, 0, 0x08, 3, 10, 4, 4)
    (data / "train-images-idx3-ubyte").write_bytes(header + b"\x00" * 30)  # promises 160
    (data / "train-labels-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 10)
                                                    + bytes(10))
    (root / "gz").mkdir()
    gz = root / "gz" / "bad-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(header + bytes(range(160)))[:25])
    for name in ("complex.npz", "nan.npz", "scalar.npz", "corrupt.npz"):
        spec(name.split(".")[0], tiny_spec(**{"data": {"name": "npz", "path": str(data / name)}}))
    spec("strings", tiny_spec(**{"data": {"name": "csv", "path": str(data / "strings.csv")}}))
    spec("idx", tiny_spec(**{"data": {"name": "idx", "path": str(data)}}))
    spec("gzip", tiny_spec(**{"data": {"name": "idx",
                                       "path": str(gz),
                                       "labels_path": str(data / "train-labels-idx1-ubyte")}}))
    f["models"] = root / "models.py"
    f["models"].write_text(MODELS)
    sweep = {"name": "sw", "base": tiny_spec(**{"train.steps": 2}),
             "grid": {"net.init": [{"name": "normal", "sigma_w2": 1.0},
                                   {"name": "normal", "sigma_w2": "abc"}]}}
    f["bad_sweep"] = root / "bad_sweep.yaml"
    f["bad_sweep"].write_text(yaml.safe_dump(sweep))
    f["big_sweep"] = root / "big_sweep.yaml"
    f["big_sweep"].write_text(yaml.safe_dump({
        "name": "big", "base": good, "grid": {"train.seed": list(range(100)),
                                              "train.lr": [0.1 * (i + 1) for i in range(100)],
                                              "net.depth": list(range(1, 101)),
                                              "net.width": list(range(1, 101))}}))
    return f


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store holding a plain run, a sweep's runs and a run with a markup name; bad files."""
    root = tmp_path_factory.mktemp("bad")
    store = root / "store.sqlite"
    gp.run(tiny_spec(**{"train.steps": 2}), store=store)
    gp.run(tiny_spec(**{"train.steps": 2, "name": "[/x]evil"}), store=store)
    gp.sweep({"name": "ok", "base": tiny_spec(**{"train.steps": 2}),
              "grid": {"train.seed": [0, 1]}}, store=store)
    with Store(store) as db:
        before = db.runs()[["id", "name", "status"]].to_dict("records")
    files = _write_files(root)
    files["busy"] = root / "busy.yaml"
    files["busy"].write_text(yaml.safe_dump({"name": "busy", "base": tiny_spec(),
                                             "grid": {"train.seed": [0, 1]}}))
    _claim(store, "busy", os.getpid())  # this test process holds it: it is alive
    return {"root": root, "store": store, "before": before, "files": files}


def _claim(store: Path, sweep: str, pid: int) -> None:
    with sqlite3.connect(store) as db:
        db.execute("INSERT OR REPLACE INTO sweep_claims VALUES (?, ?, ?, 0)",
                   (sweep, socket.gethostname(), pid))


def _cases(w: dict) -> list[tuple[str, list[str], str]]:
    """(id, argv, a word the error line must contain)."""
    s, f, root = str(w["store"]), w["files"], w["root"]
    run = ["run", str(f["good"]), "--store", s, "-q"]
    return [
        # 3: parameters of activations, inits and bias inits are typed and range-checked
        ("init-string", [*run, "--set", "net.init={name: normal, sigma_w2: abc}"], "sigma_w2"),
        ("init-negative", [*run, "--set", "net.init={name: normal, sigma_w2: -1}"], "> 0"),
        ("init-nan", [*run, "--set", "net.init={name: normal, sigma_w2: .nan}"], "finite"),
        ("init-list", [*run, "--set", "net.init={name: normal, std: [1, 2]}"], "number"),
        ("bias-inf", [*run, "--set", "net.bias_init={name: constant, value: .inf}"], "finite"),
        ("act-zero", [*run, "--set", "net.activation={name: softplus, beta: 0}"], "beta"),
        ("lr-inf", [*run, "--set", "train.lr=.inf"], "train.lr"),
        ("sweep-bad-config", ["sweep", str(f["bad_sweep"]), "--store", s, "-q"], "sigma_w2"),
        # 4: sizes are capped
        ("bomb", ["run", str(f["bomb"]), "--store", s], "expands"),
        ("width-1e9", [*run, "--set", "net.width=1000000000"], "width"),
        ("width-1e5", [*run, "--set", "net.width=100000", "--set", "net.depth=10"], "memory"),
        ("samples-1e11", [*run, "--set", "data={name: teacher, n_samples: 100000000000}"],
         "n_samples"),
        ("steps-1e22", [*run, "--set", "train.steps=10000000000000000000000"], "steps"),
        ("grid-1e5", ["sweep", str(f["big_sweep"]), "--store", s], "configurations"),
        ("theory-depth", ["theory", "-a", "tanh", "--sigma-w2", "1", "--sigma-b2", "0",
                          "--depth", "100000000"], "--depth"),
        # 5: everything the user can fix is one line
        ("output-is-dir", ["export", "tiny", "-o", str(root), "--store", s], str(root)),
        ("store-is-dir", ["runs", "--store", str(root)], "directory"),
        ("binary-spec", ["run", str(f["binary"]), "--store", s], "not a text file"),
        ("corrupt-npz", ["run", str(f["corrupt"]), "--store", s], "npz"),
        ("complex-npz", ["run", str(f["complex"]), "--store", s], "complex"),
        ("nan-npz", ["run", str(f["nan"]), "--store", s], "NaN"),
        ("scalar-npz", ["run", str(f["scalar"]), "--store", s], "scalar"),
        ("string-csv", ["run", str(f["strings"]), "--store", s], "numeric"),
        ("short-idx", ["run", str(f["idx"]), "--store", s], "IDX"),
        ("broken-gzip", ["run", str(f["gzip"]), "--store", s], "IDX"),
        ("sys-exit-model", ["diagnose", f"{f['models']}:exits"], "sys.exit(3)"),
        ("frozen-model", ["diagnose", f"{f['models']}:frozen"], "frozen"),
        ("huge-seed", ["diagnose", f"{f['models']}:frozen", "--seed", str(10**30)], "--seed"),
        ("seed-spec", [*run, "--set", "train.seed=100000000000000000000000"], "seed"),
        ("lr-nan-diagnose", ["diagnose", f"{f['models']}:frozen", "--lr", "nan"], "--lr"),
        # 6: silently accepted nonsense
        ("depth-true", [*run, "--set", "net.depth=true"], "net.depth"),
        ("batch-true", [*run, "--set", "train.batch_size=true"], "batch_size"),
        ("empty-train", [*run, "--set", "data.test_fraction=0.99"], "test_fraction"),
        ("show-underscore", ["show", "_", "--store", s], "no run"),
        ("show-empty", ["show", "", "--store", s], "run id"),
        ("show-missing-store", ["show", "x", "--store", str(root / "none.sqlite")],
         "no run store"),
        ("resume-changed-base", ["sweep", str(f["changed"]), "--store", s, "--resume"],
         "train.steps"),
        ("concurrent-sweep", ["sweep", str(f["busy"]), "--store", s], "already running"),
        # 2: user text is escaped
        ("markup-in-error", ["show", "[red]nope", "--store", s], "[red]nope"),
    ]


def test_bad_inputs_are_one_line_errors(world):
    sweep = {"name": "ok", "base": tiny_spec(**{"train.steps": 3}),
             "grid": {"train.seed": [0, 1]}}
    world["files"]["changed"] = world["root"] / "changed.yaml"
    world["files"]["changed"].write_text(yaml.safe_dump(sweep))
    cases = _cases(world)
    results = run_batch([{"argv": argv, "cwd": str(world["root"])} for _, argv, _ in cases])
    failures = []
    for (case_id, _, word), res in zip(cases, results, strict=True):
        lines = res["stderr"].strip().splitlines()
        ok = (res["code"] == 2 and len(lines) == 1 and "Traceback" not in res["stderr"]
              and word in lines[0])
        if not ok:
            failures.append(f"{case_id}: exit {res['code']}, stderr {res['stderr'][-600:]!r}")
    assert not failures, "\n".join(failures)
    assert not (world["root"] / "none.sqlite").exists()  # show never creates a store
    with Store(world["store"]) as db:
        assert db.runs()[["id", "name", "status"]].to_dict("records") == world["before"]


def test_store_with_plain_sweep_and_markup_runs_lists_and_shows(world, tmp_path):
    store, root = str(world["store"]), world["root"]
    evil = root / "evil.yaml"
    evil.write_text(yaml.safe_dump(tiny_spec(**{"train.steps": 2, "name": "[bold]x[/bold]"})))
    bad_sweep = root / "markup_sweep.yaml"
    bad_sweep.write_text(yaml.safe_dump({"name": "[/s]sw", "base": tiny_spec(**{
        "train.steps": 2}), "grid": {"net.activation": ["tanh", "relu"]}}))
    copy = tmp_path / "copy.sqlite"  # the module's store stays as the other tests expect
    copy.write_bytes(Path(store).read_bytes())
    s = str(copy)
    cases = [["run", str(evil), "--store", s], ["runs", "--store", s],
             ["show", "[/x]evil", "--store", s], ["runs", "--store", s, "--sweep", "ok"],
             ["report", "[/x]evil", "--store", s, "-o", str(tmp_path / "[red]r.html")],
             ["sweep", str(bad_sweep), "--store", s]]
    results = run_batch([{"argv": a, "cwd": str(root), "env": {"COLUMNS": "200"}}
                         for a in cases])
    for argv, res in zip(cases, results, strict=True):
        assert res["code"] == 0, (argv, res["stderr"])
    _, listing, shown, _, report, swept = (r["stdout"] for r in results)
    assert "[/x]evil" in listing and "[bold]x[/bold]" in listing and "ok[seed=0]" in listing
    assert "nan" not in listing  # plain runs have no sweep: an empty cell, not NaN
    assert "[/x]evil" in shown.splitlines()[0]
    assert "[red]r.html" in report and (tmp_path / "[red]r.html").is_file()
    assert "2 complete" in swept


def test_corrupt_row_is_one_line_and_internal_errors_need_debug(world, monkeypatch):
    broken = world["root"] / "broken.sqlite"
    Store(broken).close()
    with sqlite3.connect(broken) as db:
        db.execute("INSERT INTO runs (id, name, spec_json, status, created_at, summary_json) "
                   "VALUES ('abc', 'b', '{\"net\": {}}', 'complete', 0, '{not json')")
    [corrupt] = run_batch([{"argv": ["show", "abc", "--store", str(broken)]}])
    assert corrupt["code"] == 2 and "run abc is corrupt" in corrupt["stderr"]
    assert len(corrupt["stderr"].strip().splitlines()) == 1

    from typer.testing import CliRunner

    from gradprobe.cli import app

    def bug(*args, **kwargs):
        raise RuntimeError("a bug in gradprobe\nsecond line")

    monkeypatch.setattr(Store, "runs", bug)
    argv = ["runs", "--store", str(world["store"])]
    plain = CliRunner().invoke(app, argv)
    assert plain.exit_code == 1
    assert plain.output.strip() == ("internal error: RuntimeError: a bug in gradprobe (run with "
                                    "--debug for the traceback)")
    debug = CliRunner().invoke(app, ["--debug", *argv])
    assert isinstance(debug.exception, RuntimeError)  # raised: the traceback is shown


@pytest.mark.parametrize("call", [
    lambda: gp.run(5), lambda: gp.run(None), lambda: gp.sweep(42),
    lambda: gp.run({}, store=123), lambda: gp.run({}, overrides="net.depth=4"),
    lambda: gp.sweep({"name": "s"}, overrides="grid.net.depth=[2]"),
], ids=["run-int", "run-none", "sweep-int", "store-int", "overrides-str", "sweep-overrides"])
def test_api_misuse_raises_one_line_user_errors(call):
    with pytest.raises(UserError) as info:
        call()
    assert isinstance(info.value, TypeError)  # also what the caller may already catch
    assert len(str(info.value).splitlines()) == 1


def test_read_only_store_is_refused_for_writing_but_readable(world, monkeypatch):
    import os

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK
                        else real_access(p, mode))
    with pytest.raises(UserError, match="not writable"):
        Store(world["store"])
    with Store(world["store"], create=False) as db:  # reading needs no write access
        assert len(db.runs()) == len(world["before"])


def test_yaml_floats_and_dotted_overrides_agree_with_theory():
    spec = gp.load_spec({"net": {"activation": "tanh"}},
                        ["net.init={name: normal, sigma_w2: 2e0}", "net.bias_init.sigma_b2=5e-2",
                         "net.bias_init.name=normal", "train.lr=1e-1"])
    assert spec.net.init.params == {"sigma_w2": 2.0}
    assert spec.net.bias_init.params == {"sigma_b2": 0.05} and spec.train.lr == 0.1
    for bad in (float("nan"), float("inf"), -1.0, 0.0):
        with pytest.raises(UserError) as from_spec:
            gp.load_spec({}, {"net.init": {"name": "normal", "sigma_w2": bad}})
        with pytest.raises(UserError) as from_theory:
            gp.theory.predict("tanh", bad, 0.0)
        assert "finite number > 0" in str(from_spec.value)
        assert "finite number > 0" in str(from_theory.value)


def test_a_claim_left_by_a_dead_process_is_taken_over(tmp_path):
    store = tmp_path / "s.sqlite"
    Store(store).close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _claim(store, "s", dead.pid)
    table = gp.sweep({"name": "s", "base": tiny_spec(**{"train.steps": 2}),
                      "grid": {"train.seed": [0, 1]}}, store=store)
    assert (table["status"] == "complete").all()
    with sqlite3.connect(store) as db:  # released when the sweep ends
        assert db.execute("SELECT COUNT(*) FROM sweep_claims").fetchone()[0] == 0


def test_warnings_before_an_error_are_dropped(capsys):
    import warnings

    import typer

    from gradprobe.cli.errors import guarded

    with pytest.raises(typer.Exit) as info, guarded():
        warnings.warn("noise from torch", UserWarning, stacklevel=1)
        raise UserError("net.depth: must be >= 1\n(second line folded)")
    assert info.value.exit_code == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: net.depth: must be >= 1 (second line folded)"


def test_warnings_after_success_are_shown_and_a_long_command_shows_them_as_they_come():
    import warnings

    from gradprobe.cli.errors import guarded, show_warnings_now

    def texts(caught):
        return [str(w.message) for w in caught]

    with warnings.catch_warnings(record=True) as shown:  # what the user would see
        warnings.simplefilter("always")
        with guarded():
            warnings.warn("held until the command ends", UserWarning, stacklevel=1)
            assert texts(shown) == []
        assert texts(shown) == ["held until the command ends"]

        with guarded():
            warnings.warn("from the start-up", UserWarning, stacklevel=1)
            show_warnings_now()
            assert texts(shown)[1:] == ["from the start-up"]
            warnings.warn("while serving", UserWarning, stacklevel=1)
            assert texts(shown)[1:] == ["from the start-up", "while serving"]
        assert len(shown) == 3  # nothing shown twice
