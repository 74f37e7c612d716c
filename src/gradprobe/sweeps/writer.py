"""Storing a sweep's finished configurations on a background thread while training goes on.

:class:`StoreWriter` takes each finished configuration (:meth:`StoreWriter.submit`, from
any thread) and writes it with :meth:`Store.write_run` on its own thread, one transaction
per configuration as before, in the order submitted; after each commit it calls
``on_stored(row)`` on that thread. Meanwhile the engine trains the next group, or builds
the next member's results: sqlite3 releases the GIL while SQLite works, and torch's
kernels do, so the writes mostly overlap training instead of following it.

The driver waits for every submitted configuration before it reads the store or returns
(:meth:`StoreWriter.close`), also after Ctrl-C or an error in training: finished work is
kept (a second Ctrl-C while it waits gives up what is still queued). A killed process
loses only what was still queued, never half a configuration, and ``resume`` trains those
again. An error inside the writer (a full disk, or ``on_stored``
raising) stops it: nothing more is written, and the error is raised in the driver at its
next :meth:`~StoreWriter.submit` or at :meth:`~StoreWriter.close`.

With ``background=False`` (or :data:`BACKGROUND` false) every write happens inside
``submit``, on the caller's thread: the same rows, the same order.

Example:
    >>> rows = []
    >>> with StoreWriter(lambda job: job * 2, rows.append) as writer:
    ...     writer.submit(1)
    ...     writer.submit(2)
    >>> rows
    [2, 4]
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

BACKGROUND = True  # the benchmark and tests switch it to compare both paths
QUEUED = 8  # configurations waiting for the writer, at most
_DONE = object()  # the queue's last item


class StoreWriter:
    """``write(job) -> row`` for every submitted job, on one background thread."""

    def __init__(self, write: Callable[[Any], Any], on_stored: Callable[[Any], None],
                 background: bool | None = None) -> None:
        self.write = write
        self.on_stored = on_stored
        self.background = BACKGROUND if background is None else background
        self._lock = threading.Lock()  # one inline write at a time (engines side by side)
        self._error: BaseException | None = None
        # bounded: a writer slower than training holds training back instead of letting
        # finished results (and their metric frames) pile up in memory, to be lost on a kill
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUED)
        self._thread: threading.Thread | None = None
        self._abandoned = False  # set by a Ctrl-C during close: stop after the job in hand
        if self.background:
            self._thread = threading.Thread(target=self._work, name="gradprobe-store-writer",
                                            daemon=True)
            self._thread.start()

    def submit(self, job: Any) -> None:
        """Queue ``job`` (inline: write it now); raises an earlier error of the writer."""
        self._raise()
        if not self.background:
            with self._lock:
                self.on_stored(self.write(job))
            return
        self._queue.put(job)

    def close(self) -> None:
        """Wait until every queued job is written (or the writer failed), then stop; raises
        the writer's error. Ctrl-C while waiting gives up the jobs not begun: the one being
        written is finished (its transaction is never cut), then the interrupt goes on."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_DONE)
            try:
                while thread.is_alive():
                    thread.join(timeout=0.05)
            except BaseException:
                self._abandoned = True
                thread.join()
                raise
        self._raise()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is _DONE or self._abandoned:
                return
            if self._error is not None:
                continue  # failed: drain without writing, until told to stop
            try:
                self.on_stored(self.write(job))
            except BaseException as exc:  # noqa: BLE001 -- handed to the driver
                self._error = exc

    def _raise(self) -> None:
        if self._error is not None:  # sticky: nothing more is accepted after an error
            raise self._error

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        # training failed or was interrupted: keep what finished, raise the original (the
        # writer's own error, if any, is secondary)
        with contextlib.suppress(BaseException):
            self.close()
