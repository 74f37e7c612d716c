"""The run store: one SQLite file holding runs and their tidy metrics.

Tables::

    runs(id, name, sweep, config_key, spec_json, status, created_at, finished_at, duration_s,
         final_loss, final_train_accuracy, final_test_accuracy, summary_json, versions_json,
         error)
    metrics(run_id, step, layer, depth, quantity, value)
    metric_spans(run_id, first, last)

Network-level metrics (loss, accuracy) have ``layer = ''`` and ``depth = 0``. A run's
metrics take consecutive rowids (one statement, one transaction): ``metric_spans`` records
the range, which a run is read by, instead of a per-row index on ``metrics(run_id,
quantity)`` that cost half of each insert (older stores keep theirs and are read by it).

Crash safety: a run is registered as ``running`` in one transaction, and its metrics and its
final status are written together in another, so a run killed mid-way can never be marked
complete with half its metrics. Sweeps write each finished configuration in a single
transaction (:meth:`Store.write_run`). WAL mode lets readers work while a run writes.

Example:
    >>> store = Store(":memory:")
    >>> run_id = store.begin_run("demo", {"net": {}})
    >>> store.finish_run(run_id, "complete", metrics=[(0, "", 0, "loss", 2.3)])
    >>> store.metrics(run_id)["value"].tolist()
    [2.3]
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradprobe.errors import UsageError, UserError
from gradprobe.record import COLUMNS

DEFAULT_STORE = Path("runs") / "gradprobe.sqlite"
RUN_STATUSES = ("running", "complete", "diverged", "failed", "interrupted")
SUMMARY_COLUMNS = ("final_loss", "final_train_accuracy", "final_test_accuracy")
METRIC_COLUMNS = list(COLUMNS)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    sweep TEXT,
    config_key TEXT,
    spec_json TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    duration_s REAL,
    final_loss REAL,
    final_train_accuracy REAL,
    final_test_accuracy REAL,
    summary_json TEXT,
    versions_json TEXT,
    error TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_sweep_config ON runs(sweep, config_key)
    WHERE sweep IS NOT NULL AND config_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY,  -- the rowid, kept by VACUUM (metric_spans point into it)
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    layer TEXT NOT NULL,
    depth INTEGER NOT NULL,
    quantity TEXT NOT NULL,
    value REAL
);
CREATE TABLE IF NOT EXISTS metric_spans (
    run_id TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    first INTEGER NOT NULL, last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_claims (
    sweep TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL
);
"""

MetricRow = tuple[int, str, int, str, float]
MetricColumns = tuple[list, list, list, list, list]


def default_store_path() -> Path:
    """``$GRADPROBE_STORE`` if set, else ``runs/gradprobe.sqlite``."""
    return Path(os.environ.get("GRADPROBE_STORE") or DEFAULT_STORE)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide a run's numbers."""
    import numpy
    import torch

    from gradprobe._version import __version__

    return {"gradprobe": __version__, "torch": torch.__version__,
            "numpy": numpy.__version__, "python": os.sys.version.split()[0]}


def _clean(value: Any) -> Any:
    """NaN/Inf become NULL in summary columns (SQLite has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def open_store(store: Any, create: bool = True) -> Store:
    """``store`` as a :class:`Store`: one given, or opened from a path (None: the default)."""
    if isinstance(store, Store):
        return store
    if store is not None and not isinstance(store, str | Path):
        raise UsageError(f"store must be a path, a Store or None, not {type(store).__name__}")
    return Store(store, create=create)


@contextlib.contextmanager
def _sqlite_errors(path: Path, doing: str) -> Iterator[None]:
    """sqlite3 errors (read-only file, full disk, corrupt file) as one-line UserErrors."""
    try:
        yield
    except sqlite3.Error as exc:
        raise UserError(f"{path}: cannot {doing} the run store ({exc})") from None


class Store:
    """A SQLite run store. Opens the file at ``path``, creating it unless ``create=False``."""

    def __init__(self, path: str | Path | None = None, create: bool = True) -> None:
        if path is not None and not isinstance(path, str | Path):
            raise UsageError(f"store must be a path or None, not {type(path).__name__}")
        self.path = Path(path) if path is not None else default_store_path()
        memory = str(self.path) == ":memory:"
        if not memory and self.path.is_dir():
            raise UserError(f"{self.path} is a directory; the store is a file (e.g. "
                            f"{self.path / 'gradprobe.sqlite'})")
        if not memory and not create and not self.path.is_file():
            raise UserError(f"no run store at {self.path} (runs create one: gradprobe run SPEC)")
        if not memory and create:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot create the store directory {self.path.parent}: "
                                f"{exc.strerror}") from None
        writable = memory or os.access(self.path if self.path.exists() else self.path.parent,
                                       os.W_OK)
        if create and not writable:
            raise UserError(f"{self.path}: the run store is not writable (check its permissions "
                            "or pick another with --store)")
        try:
            if writable:
                # a sweep writes on its writer thread (gradprobe.sweeps.writer)
                self._db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None,
                                           check_same_thread=False)
            else:
                uri = f"file:{self.path.absolute()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)
            self._db.execute("PRAGMA foreign_keys = ON")
            if not memory and writable:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
            if writable:
                self._db.executescript(_SCHEMA)
            self._db.execute("SELECT id FROM runs LIMIT 1").fetchall()
            # spans only where rowids are stable: older stores read by their index
            self._spans = "id" in {r[1] for r in self._db.execute("PRAGMA table_info(metrics)")}
        except sqlite3.Error as exc:
            if hasattr(self, "_db"):
                self._db.close()  # a file that is not a store: nothing stays open
            raise UserError(f"{self.path}: not a gradprobe store ({exc})") from None

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------

    def begin_run(
        self,
        name: str,
        spec: dict[str, Any],
        sweep: str | None = None,
        config_key: str | None = None,
    ) -> str:
        """Register a run as ``running`` and return its id."""
        run_id = uuid.uuid4().hex[:12]
        with _sqlite_errors(self.path, "write to"), _transaction(self._db):
            self._insert_running(run_id, name, spec, sweep, config_key)
            _set_span(self._db, run_id, 1, 0)  # no metrics yet (a killed run reads none)
        return run_id

    def _insert_running(
        self, run_id: str, name: str, spec: dict[str, Any], sweep: str | None,
        config_key: str | None,
    ) -> None:
        self._db.execute(
            "INSERT INTO runs (id, name, sweep, config_key, spec_json, status, created_at, "
            "versions_json) VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
            (run_id, name, sweep, config_key, json.dumps(spec), time.time(),
             json.dumps(library_versions())),
        )

    def finish_run(
        self,
        run_id: str,
        status: str,
        metrics: Iterable[MetricRow] | pd.DataFrame = (),
        summary: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Write a run's metrics and final status in one transaction."""
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}")
        summary = summary or {}
        columns = _metric_columns(metrics)
        with _sqlite_errors(self.path, "write to"), _transaction(self._db):
            created = self._db.execute(
                "SELECT created_at FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            if created is None:
                raise KeyError(run_id)
            _insert_metrics(self._db, run_id, columns)
            now = time.time()
            self._db.execute(
                "UPDATE runs SET status = ?, finished_at = ?, duration_s = ?, final_loss = ?, "
                "final_train_accuracy = ?, final_test_accuracy = ?, summary_json = ?, error = ? "
                "WHERE id = ?",
                (status, now, now - created[0],
                 *(_clean(summary.get(c)) for c in SUMMARY_COLUMNS),
                 json.dumps(summary, default=_json_default), error, run_id),
            )

    def write_run(
        self,
        name: str,
        spec: dict[str, Any],
        status: str,
        metrics: Iterable[MetricRow] | pd.DataFrame,
        summary: dict[str, Any] | None = None,
        sweep: str | None = None,
        config_key: str | None = None,
        error: str | None = None,
        duration_s: float | None = None,
    ) -> str:
        """Write a finished run, metrics and all, in a single transaction; return its id.

        If ``(sweep, config_key)`` is already stored, nothing is written and the existing id
        is returned: resuming a sweep never duplicates a run.
        """
        run_id = uuid.uuid4().hex[:12]
        summary = summary or {}
        columns = _metric_columns(metrics)
        now = time.time()
        with _sqlite_errors(self.path, "write to"), _transaction(self._db):
            if sweep is not None and config_key is not None:
                found = self._db.execute(
                    "SELECT id FROM runs WHERE sweep = ? AND config_key = ?", (sweep, config_key)
                ).fetchone()
                if found:
                    return found[0]
            self._db.execute(
                "INSERT INTO runs (id, name, sweep, config_key, spec_json, status, created_at, "
                "finished_at, duration_s, final_loss, final_train_accuracy, final_test_accuracy, "
                "summary_json, versions_json, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, name, sweep, config_key, json.dumps(spec), status,
                 now - (duration_s or 0.0), now, duration_s,
                 *(_clean(summary.get(c)) for c in SUMMARY_COLUMNS),
                 json.dumps(summary, default=_json_default), json.dumps(library_versions()),
                 error),
            )
            _insert_metrics(self._db, run_id, columns)
        return run_id

    def mark(self, run_id: str, status: str, error: str | None = None) -> None:
        """Set a run's status (e.g. ``interrupted``) without touching its metrics."""
        with contextlib.suppress(sqlite3.Error):  # best effort while another error unwinds
            self._db.execute(
                "UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE id = ?",
                (status, error, time.time(), run_id),
            )

    # -- reading -------------------------------------------------------------------------

    def runs(self, sweep: str | None = None, status: str | None = None) -> pd.DataFrame:
        """All runs (newest last) as a DataFrame, optionally of one sweep or status."""
        given = [(c, v) for c, v in (("sweep", sweep), ("status", status)) if v is not None]
        query = "SELECT * FROM runs" + (" WHERE " if given else "")
        query += " AND ".join(f"{c} = ?" for c, _ in given) + " ORDER BY created_at, rowid"
        return pd.read_sql_query(query, self._db, params=[v for _, v in given])

    def resolve(self, run: str) -> str:
        """A full run id from an id, a unique id prefix, or a run name (latest wins)."""
        if not isinstance(run, str) or not run.strip():
            raise UserError("give a run id, a unique id prefix or a run name (see 'gradprobe "
                            "runs')")
        pattern = run.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._db.execute(
            "SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY created_at", (pattern,)
        ).fetchall()
        if len(rows) == 1:
            return rows[0][0]
        if len(rows) > 1:
            raise UserError(f"run id prefix {run!r} is ambiguous ({len(rows)} runs match)")
        rows = self._db.execute(
            "SELECT id FROM runs WHERE name = ? ORDER BY created_at DESC, rowid DESC", (run,)
        ).fetchall()
        if rows:
            return rows[0][0]
        raise UserError(f"no run {run!r} in {self.path} (see 'gradprobe runs')")

    def run(self, run: str) -> dict[str, Any]:
        """One run's row as a dict, with ``spec`` and ``summary`` parsed."""
        run_id = self.resolve(run)
        cur = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,))
        names = [d[0] for d in cur.description]
        row = dict(zip(names, cur.fetchone(), strict=True))
        try:
            row["spec"] = json.loads(row.pop("spec_json"))
            row["summary"] = json.loads(row.pop("summary_json") or "{}")
            row["versions"] = json.loads(row.pop("versions_json") or "{}")
        except (TypeError, ValueError) as exc:
            raise UserError(f"{self.path}: run {run_id} is corrupt ({exc})") from None
        return row

    def metrics(
        self, run: str, quantity: str | Sequence[str] | None = None
    ) -> pd.DataFrame:
        """A run's metrics, tidy: step, layer, depth, quantity, value."""
        run_id = self.resolve(run)
        query = "SELECT step, layer, depth, quantity, value FROM metrics WHERE run_id = ?"
        args: list[Any] = [run_id]
        span = self._spans and self._db.execute(
            "SELECT first, last FROM metric_spans WHERE run_id = ?", (run_id,)).fetchone()
        if span:
            query += " AND rowid BETWEEN ? AND ?"
            args += list(span)
        if quantity is not None:
            names = [quantity] if isinstance(quantity, str) else list(quantity)
            query += f" AND quantity IN ({', '.join('?' * len(names))})"
            args += names
        query += " ORDER BY rowid"
        frame = pd.read_sql_query(query, self._db, params=args)
        frame["value"] = frame["value"].astype(float)
        return frame

    def completed_keys(self, sweep: str) -> set[str]:
        """config_keys of a sweep's runs that finished (complete, diverged or failed)."""
        rows = self._db.execute(
            "SELECT config_key FROM runs WHERE sweep = ? AND status IN "
            "('complete', 'diverged', 'failed')",
            (sweep,),
        ).fetchall()
        return {r[0] for r in rows}

    def claim_sweep(self, sweep: str) -> None:
        """Mark ``sweep`` as running in this process; refuse if a live process holds it.

        A claim left by a process that no longer runs on this host (``kill -9``) is taken
        over; one held on another host is respected.
        """
        host, pid = socket.gethostname(), os.getpid()
        with _sqlite_errors(self.path, "write to"), _transaction(self._db):
            held = self._db.execute(
                "SELECT host, pid FROM sweep_claims WHERE sweep = ?", (sweep,)
            ).fetchone()
            if held is not None and (held[0], held[1]) != (host, pid) and _alive(*held):
                raise UserError(
                    f"sweep {sweep!r} is already running in {self.path} (process {held[1]} on "
                    f"{held[0]}): wait for it, then use --resume, or give this sweep a new name"
                )
            self._db.execute(
                "INSERT OR REPLACE INTO sweep_claims (sweep, host, pid, started_at) "
                "VALUES (?, ?, ?, ?)", (sweep, host, pid, time.time()),
            )

    def release_sweep(self, sweep: str) -> None:
        """Drop this process's claim on ``sweep``."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("DELETE FROM sweep_claims WHERE sweep = ? AND host = ? AND pid = ?",
                             (sweep, socket.gethostname(), os.getpid()))


def _alive(host: str, pid: int) -> bool:
    """Whether ``pid`` runs (always assumed for another host)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (Ctrl-C included)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _metric_columns(metrics: Iterable[MetricRow] | pd.DataFrame) -> MetricColumns:
    """step, layer, depth, quantity and value as lists of Python ints, strs and floats
    (NaN as None), ready for ``executemany``.

    A DataFrame is converted a column at a time by numpy (``tolist`` gives Python scalars),
    not cell by cell: the same values, several times faster on a sweep's metrics.
    """
    if not isinstance(metrics, pd.DataFrame):
        rows = [(int(s), str(lay), int(d), str(q), _nan_to_null(v))
                for s, lay, d, q, v in metrics]
        return tuple(map(list, zip(*rows, strict=True))) if rows else ([],) * 5
    # columns read one by one (selecting them first copies the frame)
    values = metrics["value"].to_numpy(dtype=np.float64)
    value_list: list[float | None] = values.tolist()
    for i in np.flatnonzero(np.isnan(values)).tolist():
        value_list[i] = None
    return (metrics["step"].to_numpy(dtype=np.int64).tolist(), _strings(metrics["layer"]),
            metrics["depth"].to_numpy(dtype=np.int64).tolist(), _strings(metrics["quantity"]),
            value_list)


def _insert_metrics(db: sqlite3.Connection, run_id: str, columns: MetricColumns) -> None:
    """One ``executemany`` over tuples zipped from the columns, and the run's span of
    rowids (in the caller's transaction, so no other writer comes between). Rows added to
    a run that has some keep one span only if they follow on; else it is read by run_id."""
    before, n = _last_rowid(db), len(columns[0])
    db.executemany(
        "INSERT INTO metrics (run_id, step, layer, depth, quantity, value) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        zip(itertools.repeat(run_id, n), *columns, strict=True),
    )
    held = db.execute("SELECT first, last FROM metric_spans WHERE run_id = ?",
                      (run_id,)).fetchone()
    first = before + 1 if held is None or held[1] < held[0] else held[0]
    adjacent = held is None or held[1] < held[0] or held[1] == before
    if adjacent and _last_rowid(db) == before + n:  # consecutive, as SQLite assigns them
        _set_span(db, run_id, first, before + n)
    else:
        db.execute("DELETE FROM metric_spans WHERE run_id = ?", (run_id,))


def _last_rowid(db: sqlite3.Connection) -> int:
    return db.execute("SELECT max(rowid) FROM metrics").fetchone()[0] or 0  # 0: empty


def _set_span(db: sqlite3.Connection, run_id: str, first: int, last: int) -> None:
    db.execute("INSERT OR REPLACE INTO metric_spans (run_id, first, last) VALUES (?, ?, ?)",
               (run_id, first, last))


def _strings(column: pd.Series) -> list[str]:
    """A text column as Python strs (a pandas string column already gives them)."""
    if isinstance(column.dtype, pd.StringDtype) and not column.hasnans:
        return column.tolist()
    return [str(v) for v in column.tolist()]


def _nan_to_null(value: Any) -> float | None:
    """SQLite has no NaN: it becomes NULL (read back as NaN). Infinities are kept."""
    value = float(value)
    return None if math.isnan(value) else value


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, float):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
