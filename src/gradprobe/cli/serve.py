"""``gradprobe serve``: the playground, a local web app (:mod:`gradprobe.serve`) on uvicorn.

Registered by ``gradprobe.cli`` as ``app.command("serve")(serve_command)``. It binds
127.0.0.1 unless told otherwise, prints the URL, and opens a browser only with ``--open``.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
OPEN_DELAY_S = 1.0  # --open: let uvicorn start listening first


def check_port(host: str, port: int) -> None:
    """Fail with one line, before starting anything, when ``host:port`` cannot be bound."""
    import socket

    from gradprobe.errors import UserError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror} "
                            "(choose another with --port)") from None


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """Ctrl-C first cancels the running jobs: they end as ``interrupted`` in the store,
        and their event streams end with them, so the server stops gracefully."""

        def handle_exit(self, sig, frame) -> None:  # type: ignore[no-untyped-def]
            for job in self.config.app.state.slots.running():
                job.cancel("the server stopped")
            super().handle_exit(sig, frame)

    return Server


def serve_command(
    port: int = typer.Option(8765, "--port", min=1, max=65535, help="TCP port."),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to bind (0.0.0.0: every interface; no authentication)."),
    store: Path | None = typer.Option(
        None, "--store", help="SQLite run store (default: $GRADPROBE_STORE or "
                              "runs/gradprobe.sqlite)."),
    max_trainings: int = typer.Option(
        os.cpu_count() or 1, "--max-trainings", min=1,
        help="Trainings (and diagnoses) running at once; more are refused. Default: CPU cores."),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in a browser."),
) -> None:
    """Start the playground: theory, live training, diagnosis and repair in the browser."""
    from gradprobe.errors import UserError

    try:
        import uvicorn

        from gradprobe.serve import create_app
    except ImportError as exc:
        raise UserError(f"gradprobe serve needs {exc.name}: pip install 'gradprobe[serve]'") \
            from None
    import torch

    from gradprobe.cli.console import console, err_console
    from gradprobe.cli.errors import show_warnings_now

    check_port(host, port)
    _Server = _server_class()  # noqa: N806
    # Trainings run side by side in threads: share the cores instead of oversubscribing them.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max_trainings))
    local = host in LOCAL_HOSTS
    app = create_app(store=store, max_running=max_trainings, warm=True,
                     allowed_hosts=["127.0.0.1", "localhost", "[::1]"] if local else None)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/"
    if not local:
        err_console.print(f"[bold yellow]warning:[/] serving on {host}: anyone who can reach "
                          "this port can use the page (it has no authentication)",
                          highlight=False, soft_wrap=True)
    console.print(f"gradprobe playground: {url}  (Ctrl-C stops it)", highlight=False)
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(OPEN_DELAY_S, webbrowser.open, args=(url,)).start()
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=5)
    show_warnings_now()  # the server runs until stopped: warnings as they come
    _Server(config).run()
