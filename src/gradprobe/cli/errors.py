"""How the command line reports errors: one line, the right exit code, no noise.

* Anything the user can fix exits with code 2 and one line naming the problem: a
  :class:`~gradprobe.errors.UserError`, an ``OSError`` on a path they gave (missing,
  a directory, unwritable, disk full), a broken SQLite store, a ``sys.exit`` in their model
  file, running out of memory.
* Any other exception is an internal error: one line and exit code 1, or the full traceback
  with ``gradprobe --debug``.
* Python and PyTorch warnings raised before an error are dropped (the error line says what
  went wrong); after a success they are shown as usual. A long-running command (``serve``)
  calls :func:`show_warnings_now` once it has started: from then on warnings are shown as
  they come instead of being held until it ends.

Example:
    >>> with guarded(debug=False):   # doctest: +SKIP
    ...     raise UserError("net.depth: must be >= 1")
"""

from __future__ import annotations

import contextlib
import sqlite3
import warnings
from collections.abc import Iterator
from typing import Any

import click
import typer
from rich.markup import escape
from typer.core import TyperGroup

from gradprobe.cli.console import err_console
from gradprobe.errors import UserError


def say(message: str, kind: str = "error") -> None:
    """Print ``kind: message`` as exactly one line on stderr (user text escaped)."""
    text = " ".join(str(message).split())
    err_console.print(f"[bold red]{kind}:[/] {escape(text)}", highlight=False, soft_wrap=True)


def describe(exc: BaseException) -> tuple[str, int] | None:
    """``(message, exit code)`` for an error the user can fix; None for internal errors."""
    if isinstance(exc, UserError):
        return str(exc), 2
    if isinstance(exc, OSError) and (exc.filename is not None or exc.strerror):
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return f"{where}{exc.strerror or exc}", 2
    if isinstance(exc, sqlite3.Error):
        return f"the run store failed: {exc} (is it a gradprobe store, and writable?)", 2
    if isinstance(exc, SystemExit):
        return f"user code called sys.exit({exc.code!r}); gradprobe needs it to return", 2
    if isinstance(exc, MemoryError):
        return "out of memory: make the network, the data or the batch smaller", 2
    return None


class _HeldWarnings:
    """Warnings kept back while a command runs (shown after success, dropped on error)."""

    def __init__(self, show: Any) -> None:
        self.show = show  # the warnings module's display before the command started
        self.held: list[tuple[Any, ...]] = []
        self.live = False

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        if self.live:
            self.show(*args, **kwargs)
        else:
            self.held.append((args, kwargs))

    def release(self) -> None:
        """Show what was held, and every later warning as it comes."""
        self.live = True
        for args, kwargs in self.held:
            self.show(*args, **kwargs)
        self.held.clear()


_holders: list[_HeldWarnings] = []  # innermost guarded() last


def show_warnings_now() -> None:
    """Stop holding warnings in the running command (for commands that run until stopped).

    Example:
        >>> show_warnings_now()   # outside a command: nothing to do
    """
    for holder in _holders:  # outermost first: an inner one forwards to the outer
        holder.release()


@contextlib.contextmanager
def guarded(debug: bool = False) -> Iterator[None]:
    """Run a command; errors become one line on stderr and an exit code (see module doc)."""
    with warnings.catch_warnings():
        holder = _HeldWarnings(warnings.showwarning)
        warnings.showwarning = holder
        _holders.append(holder)
        try:
            yield
        except (typer.Exit, click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except (Exception, SystemExit) as exc:
            known = describe(exc)
            if known is not None:
                say(known[0])
                raise typer.Exit(known[1]) from None
            if debug:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            say(f"{type(exc).__name__}: {first} (run with --debug for the traceback)",
                "internal error")
            raise typer.Exit(1) from None
        finally:
            _holders.remove(holder)
    holder.release()


class GuardedGroup(TyperGroup):
    """A command group whose errors become one line on stderr (see :func:`guarded`)."""

    def invoke(self, ctx: typer.Context) -> Any:
        with guarded(debug=bool(ctx.find_root().params.get("debug"))):
            return super().invoke(ctx)


def command_group(name: str, help: str, **options: Any) -> typer.Typer:
    """A typer app over :class:`GuardedGroup` (no tracebacks, no shell completion)."""
    return typer.Typer(cls=GuardedGroup, name=name, help=help, pretty_exceptions_enable=False,
                       add_completion=False, **options)
