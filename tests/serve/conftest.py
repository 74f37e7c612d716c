"""A live playground server on 127.0.0.1 (a free port), shut down by the tests that used it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

uvicorn = pytest.importorskip("uvicorn", reason="gradprobe[serve] is not installed")

from gradprobe.serve import create_app  # noqa: E402


@dataclass
class LiveServer:
    url: str
    app: object
    store: Path

    def running(self) -> int:
        return len(self.app.state.slots.running())


@contextlib.contextmanager
def serve(store: Path, max_running: int = 2) -> Iterator[LiveServer]:
    """Run the app on uvicorn in a thread on a socket bound to 127.0.0.1:0."""
    app = create_app(store=store, max_running=max_running)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", app=app, store=store)
    finally:
        for job in app.state.slots.running():
            job.cancel("test over")
            job.wait(30)
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory) -> Iterator[LiveServer]:
    with serve(tmp_path_factory.mktemp("serve") / "runs.sqlite") as live:
        yield live


def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
