"""The playground's ASGI app (Starlette): the page, its assets, the theory and job endpoints.

Routes:

* ``GET /`` the page; ``GET /static/{name}`` its assets (plotly.js from the plotly package).
* ``GET /api/options`` the controls' choices, limits, defaults and presets.
* ``POST /api/theory`` a configuration -> the theory panel.
* ``POST /api/jobs`` ``{"kind": "train" | "diagnose" | "repair", "config": {...}}`` -> 202
  ``{"job": id}``; 400 bad value, 409 this client already runs a job, 429 all slots busy.
* ``GET /api/jobs/{id}/events`` the job's events as server-sent events; the last stream
  leaving cancels the job.
* ``POST /api/jobs/{id}/stop`` cancels it; ``GET /api/status`` the slots in use.

Every error is JSON ``{"error": one line}`` with a 4xx status. Request bodies over
``MAX_BODY`` bytes are refused (413). A client is the ``gradprobe_client`` cookie the page
gets with ``GET /`` (its address when it has none).

Example:
    >>> from starlette.testclient import TestClient
    >>> client = TestClient(create_app(store=":memory:"))
    >>> client.post("/api/theory", json={"depth": 500}).json()["error"]
    'net.depth: must be from 1 to 100 in the playground, not 500'
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gradprobe.errors import UserError
from gradprobe.serve import config as cfg
from gradprobe.serve.jobs import Busy, Slots
from gradprobe.serve.sse import event_stream, json_safe

MAX_BODY = 64 * 1024
COOKIE = "gradprobe_client"
STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css",
          "plotly.min.js": "text/javascript"}
KINDS = ("train", "diagnose", "repair")


class HTTPError(Exception):
    """An error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@lru_cache(maxsize=1)
def plotly_js() -> bytes:
    """plotly.js as the plotly Python package ships it (never a CDN)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode()


def _client(request: Request) -> str:
    return request.cookies.get(COOKIE) or f"host:{request.client.host if request.client else '-'}"


def _require_json(request: Request) -> None:
    """POSTs must say JSON: a plain cross-site form cannot, so no other site drives the page."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HTTPError(f"the request must be JSON (content-type application/json), not "
                        f"{kind or 'none'!r}", 415)


async def _json_body(request: Request) -> Any:
    _require_json(request)
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise HTTPError(f"the request body is larger than {MAX_BODY // 1024} KiB", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPError(f"the request body is larger than {MAX_BODY // 1024} KiB", 413)
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPError(f"the request body is not valid JSON ({exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0]})") from None


async def index(request: Request) -> Response:
    response = Response((STATIC / "index.html").read_bytes(), media_type="text/html")
    if COOKIE not in request.cookies:
        response.set_cookie(COOKIE, secrets.token_hex(12), httponly=True, samesite="strict")
    return response


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        raise HTTPError(f"no asset {name!r}", 404)
    body = plotly_js() if name == "plotly.min.js" else (STATIC / name).read_bytes()
    return Response(body, media_type=ASSETS[name],
                    headers={"cache-control": "no-cache"})


async def options(request: Request) -> Response:
    return JSONResponse(cfg.options())


async def theory(request: Request) -> Response:
    from starlette.concurrency import run_in_threadpool

    from gradprobe.serve.theory_panel import theory_update

    _, spec = cfg.check(await _json_body(request))
    return JSONResponse(json_safe(await run_in_threadpool(theory_update, spec)))


async def start_job(request: Request) -> Response:
    from gradprobe.serve.analysis import run_diagnose, run_repair
    from gradprobe.serve.training import run_training

    body = await _json_body(request)
    if not isinstance(body, dict) or set(body) - {"kind", "config"}:
        raise HTTPError('the body must be {"kind": ..., "config": {...}}')
    kind = body.get("kind", "train")
    if kind not in KINDS:
        raise HTTPError(f"kind: unknown value {kind!r} (allowed: {', '.join(KINDS)})")
    _, spec = cfg.check(body.get("config") or {})
    store = request.app.state.store
    work = {"train": lambda job: run_training(job, spec, store),
            "diagnose": lambda job: run_diagnose(job, spec),
            "repair": lambda job: run_repair(job, spec)}[kind]
    slots: Slots = request.app.state.slots
    job = slots.start(_client(request), kind, work)
    return JSONResponse({"job": job.id, "kind": kind}, status_code=202)


def _job(request: Request):
    try:
        return request.app.state.slots.get(request.path_params["job"])
    except KeyError:
        raise HTTPError(f"no job {request.path_params['job']!r} on this server", 404) from None


async def events(request: Request) -> Response:
    job = _job(request)
    return StreamingResponse(event_stream(request, job), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


async def stop(request: Request) -> Response:
    _require_json(request)
    job = _job(request)
    if job.client != _client(request):
        raise HTTPError("this job belongs to another page", 403)
    job.cancel("stopped from the page")
    return JSONResponse({"job": job.id, "stopping": not job.done})


async def status(request: Request) -> Response:
    slots: Slots = request.app.state.slots
    running = slots.running()
    return JSONResponse({"max_running": slots.max_running, "running": len(running),
                         "jobs": [{"job": j.id, "kind": j.kind} for j in running]})


async def _user_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


async def _http_error(request: Request, exc: Exception) -> Response:
    status_code = getattr(exc, "status", 400)
    return JSONResponse({"error": str(exc)}, status_code=status_code)


async def _starlette_error(request: Request, exc: Exception) -> Response:
    code = getattr(exc, "status_code", 400)
    return JSONResponse({"error": getattr(exc, "detail", str(exc))}, status_code=code)


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    """On shutdown, running jobs are cancelled and end as ``interrupted`` in the store."""
    from starlette.concurrency import run_in_threadpool

    yield
    await run_in_threadpool(app.state.slots.shutdown)


def create_app(store: str | Path | None = None, max_running: int | None = None,
               warm: bool = False, allowed_hosts: Sequence[str] | None = None) -> Starlette:
    """The playground app; runs go to ``store`` (None: the CLI's default store).

    ``max_running`` caps concurrent jobs (default: the CPU count); ``warm`` computes every
    activation's phase diagram in the background at once; ``allowed_hosts`` refuses requests
    whose Host header names another host (no DNS rebinding onto a local server).
    """
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    routes = [
        Route("/", index),
        Route("/static/{name}", static),
        Route("/api/options", options),
        Route("/api/theory", theory, methods=["POST"]),
        Route("/api/jobs", start_job, methods=["POST"]),
        Route("/api/jobs/{job}/events", events),
        Route("/api/jobs/{job}/stop", stop, methods=["POST"]),
        Route("/api/status", status),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))] \
        if allowed_hosts else []
    app = Starlette(routes=routes, middleware=middleware, lifespan=_lifespan, exception_handlers={
        UserError: _user_error, HTTPError: _http_error, Busy: _http_error,
        HTTPException: _starlette_error,
    })
    app.state.store = store
    app.state.slots = Slots(max_running or os.cpu_count() or 1)
    if warm:
        from gradprobe.nets.activations import activation_names
        from gradprobe.serve.theory_panel import warm as warm_diagrams

        warm_diagrams(activation_names())
    return app
