"""Server-sent events from a :class:`~gradprobe.serve.jobs.Job`, with disconnect detection.

The stream replays the job's events from the first, then follows it until its ``end``
event. It checks for a client disconnect between polls (uvicorn drops writes to a closed
socket silently, so a write failing cannot be relied on) and, like any stream that ends,
detaches from the job: the last stream leaving cancels a running job.

Example:
    >>> format_event({"type": "rows", "rows": []})
    'event: rows\\ndata: {"type": "rows", "rows": []}\\n\\n'
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from gradprobe.serve.jobs import Job

POLL_S = 0.05
PING_S = 5.0


def json_safe(value: Any) -> Any:
    """JSON-ready: non-finite floats become None (JSON has no nan or inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def format_event(event: dict[str, Any]) -> str:
    """One SSE message: ``event: TYPE`` and the JSON (non-finite numbers become null)."""
    return f"event: {event['type']}\ndata: {json.dumps(json_safe(event), allow_nan=False)}\n\n"


async def event_stream(request: Request, job: Job) -> AsyncIterator[str]:
    """The job's events as SSE text, until its end or the client's disconnect."""
    index = 0
    job.attach()
    last_write = time.monotonic()
    try:
        yield "retry: 600000\n" + format_event({"type": "hello", "job": job.id})
        while True:
            new = job.events_since(index)
            index += len(new)
            for event in new:
                yield format_event(event)
                last_write = time.monotonic()
            if new and new[-1]["type"] == "end":
                return
            if await request.is_disconnected():
                return
            if time.monotonic() - last_write > PING_S:
                yield ": ping\n\n"
                last_write = time.monotonic()
            await asyncio.sleep(POLL_S)
    finally:
        job.detach()
