"""Where tasks run: in this process (``local``) or as Ray tasks (``ray``).

A backend takes the planned tasks and hands back outcomes as soon as they are done,
through ``on_done(task, outcomes)``: the local backend one configuration at a time (from
the thread that trained it), Ray a task at a time. The caller (the sweep runner, on the
driver) alone writes the store. ``on_steps(n)`` reports progress in member-steps.

Ray: ``address`` joins an existing cluster (``ray start --head`` prints it; ``auto`` finds
a local one); without it a private local Ray is started with its dashboard off and its
temp files under ``<run dir>/ray`` (the folder of the store), and shut down at the end. If
a Ray is already initialised in this process, it is used as it is. Every worker must be
able to import ``gradprobe`` (on a local Ray it is this environment).

Example:
    >>> backend = make_backend("local")
    >>> backend.name
    'local'
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from gradprobe.errors import UserError
from gradprobe.nets.plain import build
from gradprobe.spec import ExperimentSpec
from gradprobe.sweeps.plan import Outcome, Task, _dataset, run_task
from gradprobe.threads import parameter_count, thread_policy

DoneFn = Callable[[Task, list[Outcome]], None]
StepsFn = Callable[[int], None]
BACKENDS = ("local", "ray")
# Ray puts Unix sockets under its temp dir (``session_<date>_<pid>/sockets/plasma_store``,
# ~70 characters); Linux caps a socket path at 107 bytes.
_SOCKET_PATH_BUDGET = 107 - 72


class LocalBackend:
    """Run tasks one after another in this process, each with the thread policy's count
    (:mod:`gradprobe.threads`: ``threads``, or chosen from the task's size)."""

    name = "local"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def run(self, tasks: list[Task], on_done: DoneFn, on_steps: StepsFn) -> None:
        """Train every task; ``on_done(task, [outcome])`` as each configuration is ready."""
        for task in tasks:
            with thread_policy(self.threads, task_parameters(task)):
                run_task(task, on_steps, lambda outcome, task=task: on_done(task, [outcome]))


def task_parameters(task: Task) -> int:
    """Parameters trained at once: one model's, times the members of a vectorised group."""
    spec = ExperimentSpec.model_validate(task.specs[0])
    data = _dataset(spec.data)
    model = build(spec.net, data.in_shape, data.n_classes, seed=spec.train.seed)
    return parameter_count(model) * (len(task.specs) if task.vectorised else 1)


class RayBackend:
    """Run tasks as Ray tasks, each with ``cpus_per_task`` CPUs and as many torch threads."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        temp_dir: str | Path | None = None,
        num_cpus: int | None = None,
        cpus_per_task: int = 1,
    ) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError("backend 'ray' needs Ray: pip install 'gradprobe[ray]'") from None
        self.address = address
        self.temp_dir = temp_dir
        self.num_cpus = num_cpus
        self.cpus_per_task = cpus_per_task

    def run(self, tasks: list[Task], on_done: DoneFn, on_steps: StepsFn) -> None:
        """Submit every task, then collect outcomes as they finish."""
        import ray

        started = self._connect()
        pending: dict = {}
        try:
            remote = ray.remote(num_cpus=self.cpus_per_task)(_ray_task)
            pending = {remote.remote(t, self.cpus_per_task): t for t in tasks}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    task = pending.pop(ref)
                    outcomes = ray.get(ref)
                    on_steps(task.member_steps)
                    on_done(task, outcomes)
        finally:
            for ref in pending:  # interrupted or failed: stop what is still queued
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()

    def _connect(self) -> bool:
        """Join or start Ray; True when this backend started it (and so shuts it down)."""
        import ray

        if ray.is_initialized():
            return False
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if self.address:
            ray.init(address=self.address, logging_level="WARNING")
            return True
        temp = ray_temp_dir(self.temp_dir)
        ray.init(num_cpus=self.num_cpus, include_dashboard=False, _temp_dir=str(temp),
                 logging_level="WARNING")
        return True


def _ray_task(task: Task, threads: int) -> list[Outcome]:
    """What a Ray worker runs: one task with ``threads`` torch threads."""
    import torch

    torch.set_num_threads(threads)
    return run_task(task)


def ray_temp_dir(wanted: str | Path | None) -> Path:
    """An absolute temp dir for a local Ray: ``wanted`` if its path is short enough.

    Ray's Unix socket paths must fit in 107 bytes; a longer ``wanted`` gets a short
    ``/tmp/gprayXXXX`` instead, with a warning.
    """
    if wanted is not None:
        path = Path(wanted).absolute()
        if len(str(path)) <= _SOCKET_PATH_BUDGET:
            path.mkdir(parents=True, exist_ok=True)
            return path
        warnings.warn(f"gradprobe: {path} is too long a path for Ray's sockets; Ray's temp "
                      "files go to /tmp/gpray* instead", stacklevel=3)
    return Path(tempfile.mkdtemp(prefix="gpray", dir="/tmp"))


def make_backend(
    name: str,
    address: str | None = None,
    temp_dir: str | Path | None = None,
    num_cpus: int | None = None,
    threads: int | None = None,
) -> LocalBackend | RayBackend:
    """A backend by name (``local`` | ``ray``); ``address`` only for ``ray``; ``threads``
    only for ``local`` (a Ray task gets as many threads as CPUs it reserves)."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r} (allowed: {', '.join(BACKENDS)})")
    if name == "local":
        if address:
            raise UserError("--address is for the ray backend: add --backend ray")
        return LocalBackend(threads)
    return RayBackend(address=address, temp_dir=temp_dir, num_cpus=num_cpus)
