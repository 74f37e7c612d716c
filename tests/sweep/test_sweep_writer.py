"""The background store writer: the same rows as writing inline, and no finished work lost.

The reference for the rows is the same sweep written inline (``background=False``: every
configuration stored on the driver's thread as it is submitted, as before the writer).
"""

from __future__ import annotations

import threading

import pytest
from sweep_helpers import small

import gradprobe as gp
from gradprobe.sweeps import writer as writer_module
from gradprobe.sweeps.writer import StoreWriter

# vectorised groups (depths differ) and configurations trained alone (batch norm)
SPEC = {
    "name": "writer",
    "base": small(**{"train.steps": 6, "train.record_every": 2}),
    "grid": {"net.depth": [2, 3], "net.activation": ["relu", "sigmoid"],
             "train.seed": [0, 1], "net.norm": ["none", "batch"]},
}
RUN_COLUMNS = ("name", "sweep", "config_key", "spec_json", "status", "final_loss",
               "final_train_accuracy", "final_test_accuracy")


def _stored(path) -> dict[str, tuple]:
    """Per config key: the run's columns that do not depend on timing, and its metric rows
    with SQLite's type of each value, in rowid order."""
    with gp.Store(path) as db:
        out = {}
        for run in db.runs(sweep="writer").itertuples(index=False):
            rows = db._db.execute(
                "SELECT step, layer, depth, quantity, value, typeof(value) FROM metrics "
                "WHERE run_id = ? ORDER BY rowid", (run.id,)).fetchall()
            out[run.config_key] = (tuple(getattr(run, c) for c in RUN_COLUMNS), rows)
        return out


def test_background_and_inline_store_the_same_rows(tmp_path, monkeypatch) -> None:
    background = tmp_path / "background.sqlite"
    threads: set[str] = set()
    table = gp.sweep(SPEC, store=background,
                     on_run=lambda row: threads.add(threading.current_thread().name))
    assert threads == {"gradprobe-store-writer"}
    monkeypatch.setattr(writer_module, "BACKGROUND", False)
    inline = tmp_path / "inline.sqlite"
    gp.sweep(SPEC, store=inline)
    a, b = _stored(background), _stored(inline)
    assert len(a) == len(table) == 16 and "batch norm" in table.attrs["plan"]
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][0] == b[key][0]
        assert len(a[key][1]) > 20 and a[key][1] == b[key][1]


def test_jobs_are_written_in_order_while_the_driver_goes_on() -> None:
    release = threading.Event()
    written: list[int] = []

    def write(job: int) -> int:
        release.wait(timeout=30)
        return job

    with StoreWriter(write, written.append) as writer:
        for job in range(5):
            writer.submit(job)  # returns at once: the first write is still blocked
        assert written == []
        release.set()
    assert written == [0, 1, 2, 3, 4]  # all stored before the writer closed


def test_an_error_in_the_writer_stops_it_and_reaches_the_driver() -> None:
    written: list[int] = []
    first = threading.Event()

    def write(job: int) -> int:
        if job == 1:
            raise OSError("disk full")
        return job

    def stored(row: int) -> None:
        written.append(row)
        first.set()

    writer = StoreWriter(write, stored)
    writer.submit(0)
    first.wait(timeout=30)
    for job in (1, 2, 3):
        writer.submit(job)
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    assert written == [0]  # nothing after the failed job
    with pytest.raises(OSError, match="disk full"):
        writer.submit(4)


def test_interrupted_training_keeps_what_finished_and_raises_the_interrupt() -> None:
    written: list[int] = []
    with pytest.raises(KeyboardInterrupt), StoreWriter(lambda job: job, written.append) as w:
        w.submit(0)
        w.submit(1)
        raise KeyboardInterrupt  # Ctrl-C while the next configuration trains
    assert written == [0, 1]


def test_ctrl_c_while_waiting_finishes_the_job_in_hand_and_drops_the_rest(monkeypatch):
    started, release = threading.Event(), threading.Event()
    written: list[int] = []

    def write(job: int) -> int:
        started.set()
        release.wait(timeout=30)
        return job

    writer = StoreWriter(write, written.append)
    for job in range(4):
        writer.submit(job)
    started.wait(timeout=30)  # job 0 is being written
    real_join = threading.Thread.join

    def interrupted_join(thread, timeout=None):
        if timeout is not None:  # the waiting loop: Ctrl-C arrives here
            raise KeyboardInterrupt
        release.set()  # the wait for the job in hand, after the rest was given up
        return real_join(thread)

    monkeypatch.setattr(threading.Thread, "join", interrupted_join)
    with pytest.raises(KeyboardInterrupt):
        writer.close()
    assert written == [0]  # finished, never cut; 1 to 3 given up


def test_a_failing_callback_raises_in_the_driver_with_the_runs_before_it_kept(tmp_path) -> None:
    calls: list[dict] = []

    def on_run(row: dict) -> None:
        calls.append(row)
        if len(calls) == 3:
            raise ValueError("a bug in the caller's callback")

    with pytest.raises(ValueError, match="caller's callback"):
        gp.sweep(SPEC, store=tmp_path / "s.sqlite", on_run=on_run)
    with gp.Store(tmp_path / "s.sqlite") as db:
        assert len(db.runs(sweep="writer")) == 3
    assert len(gp.sweep(SPEC, store=tmp_path / "s.sqlite", resume=True)) == 16


def test_a_slow_writer_holds_submitters_back_instead_of_queueing_everything() -> None:
    import time

    waiting: list[int] = []
    written: list[int] = []

    def slow(job: int) -> int:
        waiting.append(box[0]._queue.qsize())
        time.sleep(0.002)
        return job

    box: list = []
    with StoreWriter(slow, written.append, background=True) as writer:
        box.append(writer)
        for job in range(4 * writer_module.QUEUED):
            writer.submit(job)
    assert written == list(range(4 * writer_module.QUEUED))  # all of them, in order
    assert max(waiting) <= writer_module.QUEUED
