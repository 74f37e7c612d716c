import os
import signal
import sqlite3
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


def _rows(run: int, n: int) -> list[tuple]:
    return [(s, f"layer{s % 3}", s % 3, f"q{run}", float(run * 1000 + s)) for s in range(n)]


def _by_run_id(db: Store, run_id: str) -> list[tuple]:
    """The reference read: a scan by run_id alone, in rowid order."""
    return db._db.execute("SELECT step, layer, depth, quantity, value FROM metrics "
                          "WHERE run_id = ? ORDER BY rowid", (run_id,)).fetchall()


def test_metrics_are_read_by_their_span_of_rowids(store_path):
    with Store(store_path) as db:
        begun = db.begin_run("a", {})  # begun first, finished after another run's rows
        written = db.write_run("b", {}, "complete", _rows(2, 7))
        db.finish_run(begun, "complete", _rows(1, 5))
        killed = db.begin_run("c", {})  # never finished
        empty = db.write_run("d", {}, "complete", [])
        spans = dict(db._db.execute("SELECT run_id, last - first + 1 FROM metric_spans"))
        assert spans == {begun: 5, written: 7, killed: 0, empty: 0}
        for run_id in (begun, written, killed, empty):
            frame = db.metrics(run_id)
            assert list(frame.itertuples(index=False, name=None)) == _by_run_id(db, run_id)
        assert db.metrics(written, quantity="q2")["step"].tolist() == list(range(7))


def test_a_run_written_in_pieces_reads_every_piece(store_path):
    with Store(store_path) as db:
        run_id = db.begin_run("a", {})
        db.finish_run(run_id, "complete", _rows(1, 3))
        db.finish_run(run_id, "complete", _rows(2, 2))  # adjacent: one longer span
        assert db._db.execute("SELECT last - first + 1 FROM metric_spans WHERE run_id = ?",
                              (run_id,)).fetchone() == (5,)
        other = db.write_run("b", {}, "complete", _rows(3, 4))
        db.finish_run(run_id, "complete", _rows(4, 2))  # after another run's rows
        for run in (run_id, other):
            frame = db.metrics(run)
            assert list(frame.itertuples(index=False, name=None)) == _by_run_id(db, run)
        assert len(db.metrics(run_id)) == 7


def test_a_store_without_spans_is_read_through_its_index(tmp_path):
    """A store written before metric_spans: metrics indexed by (run_id, quantity)."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT NOT NULL, sweep TEXT,
            config_key TEXT, spec_json TEXT NOT NULL, status TEXT NOT NULL,
            created_at REAL NOT NULL, finished_at REAL, duration_s REAL, final_loss REAL,
            final_train_accuracy REAL, final_test_accuracy REAL, summary_json TEXT,
            versions_json TEXT, error TEXT);
        CREATE TABLE metrics (run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            step INTEGER NOT NULL, layer TEXT NOT NULL, depth INTEGER NOT NULL,
            quantity TEXT NOT NULL, value REAL);
        CREATE INDEX metrics_run ON metrics(run_id, quantity);
        INSERT INTO runs (id, name, spec_json, status, created_at)
            VALUES ('aaaa', 'x', '{}', 'complete', 0), ('bbbb', 'y', '{}', 'complete', 1);
    """)
    rows = [(run, *row) for i in range(6) for run, row in
            (("aaaa", _rows(1, 6)[i]), ("bbbb", _rows(2, 6)[i]))]  # interleaved
    old.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)", rows)
    old.commit()
    old.close()
    with Store(path) as db:
        assert list(db.metrics("aaaa").itertuples(index=False, name=None)) == _rows(1, 6)
        new = db.write_run("z", {}, "complete", _rows(3, 4))
        assert list(db.metrics(new).itertuples(index=False, name=None)) == _rows(3, 4)
        assert list(db.metrics("bbbb").itertuples(index=False, name=None)) == _rows(2, 6)


def test_rows_not_consecutive_drop_the_span_and_read_by_run_id(store_path, monkeypatch):
    from gradprobe import store as store_module

    with Store(store_path) as db:
        db.write_run("a", {}, "complete", _rows(1, 3))
        real = store_module._last_rowid
        calls = []

        def off_by_one(conn):  # as if another row had come between
            calls.append(1)
            return real(conn) + (len(calls) == 2)

        monkeypatch.setattr(store_module, "_last_rowid", off_by_one)
        run_id = db.write_run("b", {}, "complete", _rows(2, 4))
        assert db._db.execute("SELECT count(*) FROM metric_spans WHERE run_id = ?",
                              (run_id,)).fetchone()[0] == 0
        assert list(db.metrics(run_id).itertuples(index=False, name=None)) == _rows(2, 4)


def test_every_metric_survives_a_vacuum(store_path):
    """VACUUM renumbers the rowids of a table without an INTEGER PRIMARY KEY; the spans the
    store reads by must still cover each run's rows afterwards (deletions leave gaps that
    VACUUM would close)."""
    with Store(store_path) as db:
        ids = [db.write_run(name, {}, "complete", _rows(k, 5))
               for k, name in enumerate("abc", 1)]
    with sqlite3.connect(store_path) as raw:
        raw.execute("DELETE FROM metrics WHERE run_id = ?", (ids[0],))
    with sqlite3.connect(store_path, isolation_level=None) as raw:
        raw.execute("VACUUM")
    with Store(store_path) as db:
        for k, run_id in enumerate(ids[1:], 2):
            assert list(db.metrics(run_id).itertuples(index=False, name=None)) == _rows(k, 5)
