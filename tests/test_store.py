import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from gradprobe.errors import UserError
from gradprobe.store import Store


def test_round_trip(store_path):
    with Store(store_path) as db:
        run_id = db.begin_run("r", {"net": {"depth": 3}})
        rows = [(0, "", 0, "loss", 2.5), (0, "block1.linear", 1, "weight_grad_norm", 1e-9),
                (1, "", 0, "loss", float("nan")), (1, "", 0, "test_loss", float("inf"))]
        db.finish_run(run_id, "complete", rows, {"final_loss": 1.25, "stalled": False})
    with Store(store_path) as db:
        row = db.run(run_id[:6])
        assert row["status"] == "complete" and row["spec"] == {"net": {"depth": 3}}
        assert row["final_loss"] == 1.25 and row["summary"]["stalled"] is False
        assert "torch" in row["versions"]
        frame = db.metrics(run_id)
    assert frame["quantity"].tolist() == ["loss", "weight_grad_norm", "loss", "test_loss"]
    assert frame["value"].iloc[1] == 1e-9 and pd.isna(frame["value"].iloc[2])
    assert frame["value"].iloc[3] == float("inf")


def test_resolve_errors(store_path):
    with Store(store_path) as db, pytest.raises(UserError, match="no run 'zzz'"):
        db.resolve("zzz")


def test_write_run_is_idempotent_per_sweep_config(store_path):
    with Store(store_path) as db:
        a = db.write_run("s", {}, "complete", [(0, "", 0, "loss", 1.0)], sweep="sw",
                         config_key="k1")
        b = db.write_run("s", {}, "complete", [(0, "", 0, "loss", 1.0)], sweep="sw",
                         config_key="k1")
        assert a == b and len(db.runs(sweep="sw")) == 1
        assert db.completed_keys("sw") == {"k1"}


def test_failed_transaction_leaves_nothing(store_path):
    with Store(store_path) as db:
        run_id = db.begin_run("r", {})
        with pytest.raises(ValueError):
            db.finish_run(run_id, "complete", [(0, "", 0, "loss", "not a number")])
        assert db.run(run_id)["status"] == "running"
        assert db.metrics(run_id).empty


def test_a_killed_run_is_never_marked_complete(tmp_path):
    store_path = tmp_path / "s.sqlite"
    script = textwrap.dedent(f"""
        import gradprobe as gp
        gp.run({{"net": {{"depth": 6, "width": 32}}, "data": {{"name": "digits"}},
                 "train": {{"steps": 100000, "record_every": 1}}}}, store={str(store_path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if store_path.exists():
                with Store(store_path) as db:
                    if len(db.runs()):
                        break
            time.sleep(0.2)
        time.sleep(1.0)  # mid-training
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    with Store(store_path) as db:
        runs = db.runs()
        assert runs["status"].tolist() == ["running"]
        assert db.metrics(runs["id"].iloc[0]).empty
        # The store is still healthy: new runs go in.
        db.write_run("after", {}, "complete", [(0, "", 0, "loss", 1.0)])
        assert len(db.runs()) == 2


def test_ctrl_c_marks_interrupted(tmp_path):
    store_path = tmp_path / "s.sqlite"
    script = textwrap.dedent(f"""
        import gradprobe as gp
        try:
            gp.run({{"net": {{"depth": 6, "width": 32}}, "data": {{"name": "digits"}},
                     "train": {{"steps": 100000}}}}, store={str(store_path)!r})
        except KeyboardInterrupt:
            pass
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while time.time() < deadline:
        if store_path.exists():
            with Store(store_path) as db:
                if len(db.runs()):
                    break
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    with Store(store_path) as db:
        assert db.runs()["status"].tolist() == ["interrupted"]


def test_not_a_store(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="not a gradprobe store"):
        Store(junk)
