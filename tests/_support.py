"""Shared test helpers: a fake clock and one poll helper, instead of one copy per test file.

* :class:`FakeClock`: time that moves only when a test moves it. Pass it where a backend takes
  ``clock=`` (``MemoryStorage(clock=...)``, ``SQLiteStorage(..., clock=...)``, the KV binding
  double) and expire keys without sleeping.
* :func:`eventually` / :func:`eventually_sync`: poll a probe until it holds, for what only real
  time settles (a child process starting, a server coming back). The failure names the probe.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["FakeClock", "eventually", "eventually_sync"]

T = TypeVar("T")


class FakeClock:
    """A clock (seconds, as ``time.monotonic`` or ``time.time``) that a test advances by hand.

    Args:
        start: The first reading. Epoch-like (the default) suits backends that store absolute
            expiries; any value works for monotonic clocks.
    """

    __slots__ = ("now",)

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.now += seconds

    def __repr__(self) -> str:
        return f"FakeClock({self.now!r})"


def _describe(probe: object) -> str:
    return getattr(probe, "__qualname__", None) or repr(probe)


async def eventually(
    probe: Callable[[], Awaitable[T] | T],
    within: float = 10.0,
    *,
    interval: float = 0.01,
    retry: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``probe`` (sync or async) until it returns something truthy; return that.

    Args:
        probe: The condition. Exceptions listed in ``retry`` count as "not yet".
        within: Give up after this many seconds of real time.
        interval: Pause between attempts.
        retry: Exceptions that mean "not yet"; the last one is re-raised on timeout.

    Raises:
        AssertionError: The probe never held within ``within`` seconds.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            result = probe()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
        except retry:
            if time.monotonic() > deadline:
                raise
        else:
            if time.monotonic() > deadline:
                raise AssertionError(f"{_describe(probe)} did not hold within {within:g}s")
        await asyncio.sleep(interval)


def eventually_sync(
    probe: Callable[[], T],
    within: float = 10.0,
    *,
    interval: float = 0.01,
    retry: tuple[type[BaseException], ...] = (),
) -> T:
    """:func:`eventually` for code that is not in an event loop (subprocess tests)."""
    deadline = time.monotonic() + within
    while True:
        try:
            result = probe()
            if result:
                return result
        except retry:
            if time.monotonic() > deadline:
                raise
        else:
            if time.monotonic() > deadline:
                raise AssertionError(f"{_describe(probe)} did not hold within {within:g}s")
        time.sleep(interval)
