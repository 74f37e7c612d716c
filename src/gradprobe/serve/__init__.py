"""The playground: the whole study live in the browser (``gradprobe serve``).

A local Starlette app, served by uvicorn, that shows mean-field theory on every control
change, streams live training records, and runs diagnosis and verified repair on the current
configuration. Everything it serves comes from the package: no CDN, no request leaves it.

* :func:`create_app` (``app.py``): routes, body cap, errors as one-line JSON.
* ``config.py``: the controls, their limits and presets, the spec they describe.
* ``theory_panel.py``: the theory panel. ``jobs.py``: slots and worker threads.
* ``training.py``, ``analysis.py``: the jobs. ``sse.py``: server-sent events.

Example:
    >>> from gradprobe.serve import create_app
    >>> app = create_app(store=":memory:", max_running=2)
    >>> app.state.slots.max_running
    2
"""

from gradprobe.serve.app import create_app

__all__ = ["create_app"]
