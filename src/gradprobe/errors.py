"""User-facing errors.

A :class:`UserError` carries one line that names the problem and what is allowed. The CLI
prints it without a traceback and exits with code 2 (see ``gradprobe.cli``).

Example:
    >>> raise UserError("unknown activation 'foo' (allowed: relu, tanh)")  # doctest: +SKIP
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: a spec, a file, a flag. Exit code 2 in the CLI."""


class UsageError(UserError, TypeError):
    """The Python API called with the wrong kind of argument (``gp.run(5)``).

    A :class:`UserError` (one line, exit code 2) that is also a ``TypeError``.
    """
