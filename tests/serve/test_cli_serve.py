"""``gradprobe serve``: binding, the warning for every interface, the URL, --open, bad ports.

uvicorn's ``Server.run`` is replaced by a recorder: the tests check what the command asks.
"""

from __future__ import annotations

import socket
import time

import pytest
from typer.testing import CliRunner

from gradprobe.cli import app

uvicorn = pytest.importorskip("uvicorn", reason="gradprobe[serve] is not installed")


@pytest.fixture
def calls(monkeypatch):
    seen: list[dict] = []

    def run(server, *args, **kwargs):
        cfg = server.config
        seen.append({"app": cfg.app, "host": cfg.host, "port": cfg.port, "server": server})

    monkeypatch.setattr(uvicorn.Server, "run", run)
    return seen


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_binds_localhost_by_default_and_prints_the_url(calls, tmp_path):
    port = free_port()
    result = CliRunner().invoke(app, ["serve", "--port", str(port),
                                      "--store", str(tmp_path / "s.sqlite"),
                                      "--max-trainings", "3"])
    assert result.exit_code == 0, result.output
    assert f"http://127.0.0.1:{port}/" in result.output
    assert "warning" not in result.output
    (call,) = calls
    assert call["host"] == "127.0.0.1" and call["port"] == port
    assert call["app"].state.slots.max_running == 3
    assert call["app"].state.store == tmp_path / "s.sqlite"
    from starlette.testclient import TestClient

    web = TestClient(call["app"], base_url=f"http://127.0.0.1:{port}")
    assert web.get("/api/status").status_code == 200
    rebound = web.get("/api/status", headers={"host": f"evil.example:{port}"})
    assert rebound.status_code == 400  # a DNS-rebinding page is refused


def test_every_interface_warns_in_one_line(calls):
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", str(free_port())])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if "warning" in line]
    assert len(warning) == 1 and "no authentication" in warning[0]
    assert calls[0]["host"] == "0.0.0.0"


def test_open_opens_the_printed_url(calls, monkeypatch):
    import webbrowser

    import gradprobe.cli.serve as serve_module

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", opened.append)
    monkeypatch.setattr(serve_module, "OPEN_DELAY_S", 0.0)
    port = free_port()
    result = CliRunner().invoke(app, ["serve", "--open", "--port", str(port)])
    assert result.exit_code == 0, result.output
    deadline = time.monotonic() + 10
    while not opened and time.monotonic() < deadline:
        time.sleep(0.01)
    assert opened == [f"http://127.0.0.1:{port}/"]


def test_a_busy_port_is_one_line_and_exit_code_2(calls):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--port", str(port)])
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert calls == []


def test_ctrl_c_cancels_running_jobs_first(calls):
    import signal

    result = CliRunner().invoke(app, ["serve", "--port", str(free_port())])
    assert result.exit_code == 0, result.output
    server, slots = calls[0]["server"], calls[0]["app"].state.slots

    def work(job):
        while not job.cancelled:
            job.wait(0.01)

    job = slots.start("me", "train", work)
    server.handle_exit(signal.SIGINT, None)
    assert job.wait(10) and job.cancel_reason == "the server stopped"
    assert server.should_exit
