"""Output: plain lines and JSON on stdout, tables and progress bars through rich (lazily).

rich is imported only by the code paths that draw something, so ``get``, ``set`` or ``export``
work without the ``[cli]`` extra; a table asks for it with a clear error.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any, Protocol

import msgspec

from .._errors import MissingDependencyError

__all__ = [
    "Progress",
    "fmt_size",
    "fmt_ttl",
    "print_table",
    "progress",
    "require_tables",
    "write_json",
]

_INSTALL = "pip install 'gramio-storage[cli]'"
_json = msgspec.json.Encoder()


def _rich() -> Any:
    try:
        import rich.console  # the [cli] extra, only for tables and bars
        import rich.progress
        import rich.table
    except ImportError as e:
        raise MissingDependencyError(
            f"tables and progress bars need rich, which is not installed. Install it with: "
            f"{_INSTALL} (or use --json)"
        ) from e
    return rich


def require_tables() -> None:
    """Fail now, before any work or output, if tables cannot be drawn (rich is missing).

    Commands that end in a table call this first, so that a missing extra never leaves a
    partial output on stdout or a long scan wasted.

    Raises:
        MissingDependencyError: rich is not installed.
    """
    _rich()


def write_json(value: Any, out: IO[bytes] | None = None) -> None:
    """Write ``value`` as compact JSON and a newline to stdout."""
    out = out or sys.stdout.buffer
    out.write(_json.encode(value) + b"\n")
    out.flush()


def fmt_size(n: int) -> str:
    """``532 B``, ``1.2 KiB``, ``3.4 MiB``."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def fmt_ttl(ttl: float | None) -> str:
    """``-`` for no expiry, else ``42.5s``, ``12m 05s``, ``3h 02m``, ``2d 04h``."""
    if ttl is None:
        return "-"
    if ttl < 60:
        return f"{ttl:.1f}s"
    s = int(ttl)
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def print_table(
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    caption: str | None = None,
    header: bool = True,
) -> None:
    """Print a table on stdout. ``columns`` are ``(header, justify)`` pairs.

    Raises:
        MissingDependencyError: rich is not installed.
    """
    rich = _rich()
    table = rich.table.Table(title=title, caption=caption, title_justify="left", show_header=header)
    for i, (name, justify) in enumerate(columns):
        # The first column holds keys: never cut a key short, fold it over lines instead.
        table.add_column(name, justify=justify, overflow="fold", no_wrap=i != 0)
    for row in rows:
        table.add_row(*row)
    console = rich.console.Console(highlight=False, soft_wrap=False)
    console.print(table)


class Progress(Protocol):
    """What the commands report progress to."""

    def advance(self, n: int) -> None:
        """``n`` more keys done."""


class _NoProgress:
    def advance(self, n: int) -> None:
        return None


class _RichProgress:
    def __init__(self, bar: Any, task: Any) -> None:
        self._bar = bar
        self._task = task

    def advance(self, n: int) -> None:
        self._bar.advance(self._task, n)


def wants_progress(quiet: bool) -> bool:
    """Whether to draw a progress bar: only on a terminal (stderr), never when quiet."""
    return not quiet and sys.stderr.isatty()


@contextmanager
def progress(label: str, total: int | None, enabled: bool) -> Iterator[Progress]:
    """A progress bar on stderr when ``enabled``, else a no-op.

    Without rich the bar is left out rather than failing the transfer it would decorate.
    """
    if not enabled:
        yield _NoProgress()
        return
    try:
        rich = _rich()
    except MissingDependencyError:
        yield _NoProgress()
        return
    p = rich.progress
    console = rich.console.Console(stderr=True)
    columns = [
        p.TextColumn("[progress.description]{task.description}"),
        p.BarColumn(),
        p.MofNCompleteColumn(),
        p.TaskProgressColumn(),
        p.TimeRemainingColumn(),
    ]
    with p.Progress(*columns, console=console, transient=True) as bar:
        yield _RichProgress(bar, bar.add_task(label, total=total))
