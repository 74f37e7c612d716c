"""Run many invocations of the real ``gradprobe`` CLI from one Python start.

The CLI imports torch (1-2 s); a batch pays that once. The batch process imports the CLI,
then for each case forks a child that runs the console entry point
:func:`gradprobe.cli.main` with that case's ``argv``, working directory and environment, its
stdout and stderr going to real files: the child is the real command in its own process,
only spared the import. Results come back as JSON: exit code, stdout, stderr.

Usage (what :func:`run_batch` does)::

    python tests/cli_batch.py cases.json results.json
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"


def run_batch(
    cases: list[dict[str, Any]], prefix: list[str] | None = None, timeout: float = 300
) -> list[dict[str, Any]]:
    """Run ``cases`` (each ``{"argv": [...], "cwd": ..., "env": {...}}``) in one subprocess.

    ``prefix`` wraps the command (e.g. ``["bash", "-c", "ulimit -v 3000000; exec \\"$0\\"
    \\"$@\\""]``). Returns one ``{"code", "stdout", "stderr"}`` per case.
    """
    with tempfile.TemporaryDirectory() as tmp:
        cases_file, results_file = Path(tmp) / "cases.json", Path(tmp) / "results.json"
        cases_file.write_text(json.dumps(cases))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "NO_COLOR": "1"}
        cmd = [*(prefix or []), sys.executable, __file__, str(cases_file), str(results_file)]
        subprocess.run(cmd, env=env, timeout=timeout, check=True)
        return json.loads(results_file.read_text())


_PRELOAD = ("gradprobe.cli", "gradprobe.api", "gradprobe.sweeps.runner", "gradprobe.diagnosis",
            "gradprobe.theory", "sklearn.datasets", "pandas")


def _child(case: dict[str, Any], out: str, err: str) -> None:
    from gradprobe.cli import main

    fd_out = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    fd_err = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd_out, 1)
    os.dup2(fd_err, 2)
    os.chdir(case.get("cwd") or os.getcwd())
    os.environ.update(case.get("env") or {})
    sys.argv = ["gradprobe", *case["argv"]]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported like the interpreter would
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _wait(pid: int, timeout: float) -> int:
    """The child's exit code; a child still running after ``timeout`` s is killed (-9)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -9
        time.sleep(0.01)


def _main(cases_path: str, results_path: str) -> None:
    sys.path.insert(0, str(SRC))
    import importlib

    for name in _PRELOAD:  # imported once here, shared by every forked child
        importlib.import_module(name)

    cases = json.loads(Path(cases_path).read_text())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(cases):
            out, err = f"{tmp}/{i}.out", f"{tmp}/{i}.err"
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(case, out, err)
            code = _wait(pid, float(case.get("timeout", 60)))
            results.append({"code": code, "stdout": Path(out).read_text(errors="replace"),
                            "stderr": Path(err).read_text(errors="replace")})
    Path(results_path).write_text(json.dumps(results))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
