"""Jobs and slots: at most one job per client, at most ``N`` at once, each in its own thread.

A :class:`Job` (a training, a diagnosis or a repair) runs in a worker thread and appends
events to its list; any number of streams read them from any index. A job nobody watches is
cancelled: when its last stream disconnects, or when no stream attaches within
``orphan_s`` of its start. Excess requests are refused at once with a clear message (no
queue: a queued job would start long after the page asked for it).

Example:
    >>> slots = Slots(max_running=1)
    >>> job = slots.start("alice", "train", lambda job: job.emit({"type": "hello"}))
    >>> job.wait(5), [e["type"] for e in job.events_since(0)]
    (True, ['hello', 'end'])
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from gradprobe.errors import UserError

ORPHAN_S = 20.0  # a job with no stream attached by then is cancelled
KEEP_FINISHED = 32  # finished jobs kept for late readers


class Busy(Exception):
    """A job cannot start now; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Job:
    """One job's state, shared between its worker thread and the streams reading it."""

    def __init__(self, client: str, kind: str) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.client = client
        self.kind = kind
        self.started = time.time()
        self.cancel_reason: str | None = None
        self.watchers = 0
        self.ever_watched = False
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._done = threading.Event()

    def emit(self, event: dict[str, Any]) -> None:
        """Append one event (a JSON-ready dict with a ``type``)."""
        with self._lock:
            self._events.append(event)

    def events_since(self, index: int) -> list[dict[str, Any]]:
        """Events from ``index`` on."""
        with self._lock:
            return self._events[index:]

    def cancel(self, reason: str) -> None:
        """Ask the worker to stop at its next check; the first reason is kept."""
        if not self._cancel.is_set():
            self.cancel_reason = reason
            self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job has ended; False on timeout."""
        return self._done.wait(timeout)

    def attach(self) -> None:
        """A stream starts reading."""
        with self._lock:
            self.watchers += 1
            self.ever_watched = True

    def detach(self) -> None:
        """A stream stopped reading; the last one leaving cancels a running job."""
        with self._lock:
            self.watchers -= 1
            last = self.watchers == 0
        if last and not self.done:
            self.cancel("the page closed")


class Slots:
    """The job table: per-client and global limits, worker threads, lookup by id."""

    def __init__(self, max_running: int, orphan_s: float = ORPHAN_S) -> None:
        if max_running < 1:
            raise UserError(f"max concurrent trainings must be >= 1, not {max_running}")
        self.max_running = max_running
        self.orphan_s = orphan_s
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def running(self) -> list[Job]:
        """Jobs not yet ended."""
        with self._lock:
            return [j for j in self._jobs.values() if not j.done]

    def get(self, job_id: str) -> Job:
        """The job with this id (KeyError if unknown)."""
        with self._lock:
            return self._jobs[job_id]

    def start(self, client: str, kind: str, work: Callable[[Job], None]) -> Job:
        """Start ``work(job)`` in a thread, or raise :class:`Busy` (409 / 429)."""
        with self._lock:
            active = [j for j in self._jobs.values() if not j.done]
            mine = [j for j in active if j.client == client]
            if mine:
                raise Busy(f"this page already runs a {mine[0].kind} (job {mine[0].id}); "
                           "stop it first (one job per client)", 409)
            if len(active) >= self.max_running:
                raise Busy(f"all {self.max_running} training slots of this server are busy; "
                           "try again when one finishes", 429)
            job = Job(client, kind)
            self._jobs[job.id] = job
            self._forget_old()
        threading.Thread(target=self._run, args=(job, work), name=f"gradprobe-{kind}-{job.id}",
                         daemon=True).start()
        watchdog = threading.Timer(self.orphan_s, self._orphan_check, args=(job,))
        watchdog.daemon = True
        watchdog.start()
        return job

    def shutdown(self, timeout: float = 15.0) -> None:
        """Cancel every running job and wait (up to ``timeout`` in all) for them to end."""
        deadline = time.monotonic() + timeout
        for job in self.running():
            job.cancel("the server stopped")
        for job in self.running():
            job.wait(max(0.0, deadline - time.monotonic()))

    def _run(self, job: Job, work: Callable[[Job], None]) -> None:
        try:
            work(job)
        except UserError as exc:
            job.emit({"type": "error", "message": str(exc)})
        except Exception as exc:  # a crash must end the job, never the server
            line = "".join(traceback.format_exception_only(exc)).strip().splitlines()[-1]
            job.emit({"type": "error", "message": f"{job.kind} failed: {line}"})
        finally:
            job.emit({"type": "end", "kind": job.kind, "cancelled": job.cancelled,
                      "reason": job.cancel_reason})
            job._done.set()

    @staticmethod
    def _orphan_check(job: Job) -> None:
        if not job.ever_watched and not job.done:
            job.cancel("no page is watching")

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.done]
        for job in sorted(finished, key=lambda j: j.started)[:-KEEP_FINISHED or None]:
            del self._jobs[job.id]
