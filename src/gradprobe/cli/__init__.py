"""The ``gradprobe`` command line: thin typer commands over the library.

``app`` is the root group (:mod:`gradprobe.cli.app`); each command family lives in its own
module here and imports its heavy parts lazily.
"""

from gradprobe.cli.app import app, main

__all__ = ["app", "main"]
