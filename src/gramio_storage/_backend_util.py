"""Helpers shared by the built-in backends, so no backend carries its own copy.

URL option parsing, the prefix upper bound used by range scans, chunking, retry backoff, the
weak-reference timer, the event-loop guard, duration options and the base of a driver-error
scope. Private: third-party backends may copy them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import weakref
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

from ._errors import ConfigurationError, StorageError

__all__ = [
    "ErrorScope",
    "LoopGuard",
    "backoff_delays",
    "chunks",
    "parse_bool",
    "positive_seconds",
    "query_options",
    "upper_bound",
    "weak_call_later",
]

T = TypeVar("T")

# Options any URL may carry; the registry applies them, so a backend never sees them.
COMMON_URL_OPTIONS = frozenset({"prefix"})


def parse_bool(text: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case) as a bool."""
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected a boolean (true/false), got {text!r}")


def query_options(
    url: str, spec: dict[str, Callable[[str], Any]], *, scheme: str | None = None
) -> dict[str, Any]:
    """Parse ``url``'s query string into typed options; unknown or malformed ones raise.

    Args:
        url: The storage URL (its credentials never appear in an error).
        spec: Option name to converter (``float``, ``int``, :func:`parse_bool`, ``str``).
        scheme: The scheme named in errors (defaults to the URL's).

    Raises:
        ConfigurationError: An option is unknown or does not convert.
    """
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query, keep_blank_values=True)
    except ValueError as e:
        raise ConfigurationError(f"Malformed storage URL: {e}") from None
    name = scheme or parts.scheme or "storage"
    unknown = sorted(set(query) - set(spec) - COMMON_URL_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"Unknown {name}:// URL option(s) {unknown}; known: {sorted(spec)}"
        )
    options: dict[str, Any] = {}
    for option, convert in spec.items():
        if option in query:
            raw = query[option][-1]
            try:
                options[option] = convert(raw)
            except (TypeError, ValueError) as e:
                raise ConfigurationError(
                    f"Invalid {name}:// URL option {option}={raw!r}: {e}"
                ) from None
    return options


def positive_seconds(value: object, name: str, *, backend: str) -> float | None:
    """A constructor's duration option (``timeout``, ``sweep_interval``...) as float seconds.

    ``None`` passes through (the option is off); anything but a positive finite ``int`` or
    ``float`` (a bool, zero, NaN, a string) raises :class:`ConfigurationError` naming ``name``.
    """
    if value is None:
        return None
    seconds = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an int beyond float range stays NaN
            seconds = float(value)
    if not 0 < seconds < math.inf:
        raise ConfigurationError(
            f"{name} must be a positive number of seconds or None, got {value!r}",
            backend=backend,
        )
    return seconds


def upper_bound(prefix: str) -> str | None:
    """The smallest string above every string starting with ``prefix`` (None: no bound).

    Databases compare text by UTF-8 bytes (SQLite) or by code point (PostgreSQL's ``C``
    collation), and UTF-8 preserves code point order, so bumping the last code point (skipping
    the surrogates, which UTF-8 cannot encode) is exact.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def backoff_delays(
    attempts: int, *, base: float = 0.05, cap: float = 2.0
) -> Iterator[float]:
    """``attempts`` delays growing exponentially from ``base`` up to ``cap``, with full jitter."""
    for attempt in range(attempts):
        yield random.uniform(0, min(cap, base * 2**attempt))  # noqa: S311 - not cryptography


def weak_call_later(delay: float, method: Callable[[], object]) -> asyncio.TimerHandle | None:
    """Schedule ``method`` (a bound method) without its timer keeping the object alive.

    A pending timer holds only a weak reference, so a storage nobody holds any more can be
    collected; its timer then fires into nothing. Returns None outside a running loop.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop.call_later(delay, _fire, weakref.WeakMethod(method))


def _fire(ref: weakref.WeakMethod[Callable[[], object]]) -> None:
    bound = ref()
    if bound is not None:
        bound()


class LoopGuard:
    """Notices when a backend is used from another event loop than the one it connected on.

    Drivers (redis-py, asyncpg) bind connections to the loop that made them and fail with raw
    ``RuntimeError``s on another. A backend calls :meth:`changed` before using its
    connections: True means the loop changed (a second ``asyncio.run()``), so the backend
    drops its old connections (without awaiting them: their loop is gone) and makes new ones.
    """

    __slots__ = ("_loop",)

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def changed(self) -> bool:
        """Record the running loop; whether it differs from the previous one recorded."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return False
        previous, self._loop = self._loop, loop
        return previous is not None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop recorded last."""
        return self._loop


class ErrorScope:
    """Base of the one ``with`` block a backend wraps driver calls in, to map their errors.

    A subclass names its driver's exception types in :attr:`driver_errors`, keeps what the
    message needs (operation, key...) in its own slots, and implements :meth:`translate`.
    Anything else raised in the block (a ``StorageError``, the caller's own exception, a
    cancellation) passes through untouched; a driver error leaves as ``translate(e) from e``.
    """

    __slots__ = ()
    driver_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    def translate(self, exc: BaseException) -> StorageError:
        """The library's error for the driver exception ``exc``."""
        raise NotImplementedError

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        tp: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc is None or isinstance(exc, StorageError) or not isinstance(exc, self.driver_errors):
            return False
        raise self.translate(exc) from exc
