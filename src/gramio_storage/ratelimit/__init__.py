"""Rate limiting on any gramio-storage backend: the Python form of GramIO's ``@gramio/rate-limit``.

::

    from gramio_storage import storage_from_url
    from gramio_storage.ratelimit import RateLimit, RateLimiter

    limiter = RateLimiter(storage_from_url("redis://localhost"), limit=20, window=60)
    result = await limiter.hit(user_id)            # counts this request
    if not result.allowed:
        print(f"slow down, try again in {result.retry_after:.0f} s")

    await limiter.hit(user_id, RateLimit(3, 60, id="pay"))   # a stricter rule for one command

Two modes:

* ``"sliding"`` (the default, GramIO's algorithm): the key ``rl:<id>:<user>`` holds a JSON array
  of the millisecond timestamps of the requests admitted in the last ``window`` seconds. A
  request is admitted when fewer than ``limit`` remain; a refused one is not recorded (and
  costs no write). The layout is GramIO's, so a Python bot and a GramIO bot on one storage
  share their limits. Unlike GramIO's read-then-write, each check is one atomic
  :meth:`~gramio_storage.BaseStorage.update`: no request slips through when processes race
  (SQLite, PostgreSQL, Redis; memory within one process).
* ``"fixed"``: one :meth:`~gramio_storage.BaseStorage.incr` per request on
  ``rl:<id>:<user>:<window number>`` (the clock divided into ``window``-long slices), created
  with ``ttl=window``. Cheaper (a counter instead of an array) and as atomic, but up to
  ``2 * limit`` requests can pass around a window boundary.

Framework adapters live next to this module: ``gramio_storage.ratelimit.aiogram``
(a middleware with per-handler flags), ``.telegram`` (a python-telegram-bot callback wrapper)
and ``.telebot`` (pyTelegramBotAPI middlewares).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from .._errors import (
    ConfigurationError,
    InvalidKeyError,
    InvalidTTLError,
    UnsupportedOperationError,
)
from .._storage import BaseStorage

if TYPE_CHECKING:
    from .._protocol import TTL

__all__ = ["Mode", "RateLimit", "RateLimitResult", "RateLimiter", "Who"]

Mode = Literal["sliding", "fixed"]
"""``"sliding"``: GramIO's timestamp window; ``"fixed"``: an ``incr`` counter per window."""

Who = int | str
"""Whose requests are counted: a user id (or a chat id, or any non-empty string)."""

_MODES = ("sliding", "fixed")


class _Refused(Exception):
    """Raised inside ``update()`` to refuse without writing (``update`` then writes nothing)."""


def _window_seconds(window: object) -> float:
    if isinstance(window, timedelta):
        seconds = window.total_seconds()
    elif isinstance(window, (int, float)) and not isinstance(window, bool):
        seconds = float(window)
    else:
        raise InvalidTTLError(
            "window must be seconds (int or float) or a timedelta, "
            f"got {window.__class__.__qualname__}"
        )
    if not 0.001 <= seconds < math.inf:  # also rejects NaN
        raise InvalidTTLError(f"window must be a finite duration of at least 1 ms, got {window!r}")
    return seconds


class RateLimit:
    """A rule: at most ``limit`` requests per ``window`` seconds, counted under ``id``.

    Rules are immutable and hashable; make them module-level constants.

    Args:
        limit: Requests admitted per window (an ``int`` >= 1).
        window: The window, in seconds or as a ``timedelta`` (at least 1 ms).
        id: Separates the counters of different rules (GramIO's ``id``, ``"default"`` when
            not given, as GramIO does: rules without an ``id`` share one counter).
        mode: ``"sliding"`` or ``"fixed"`` (see the module docstring).

    Raises:
        ConfigurationError: ``limit``, ``id`` or ``mode`` is invalid.
        InvalidTTLError: ``window`` is not a positive duration of at least 1 ms.
    """

    __slots__ = ("id", "limit", "mode", "window", "window_ms")

    limit: int
    window: float
    window_ms: int
    id: str
    mode: Mode

    def __init__(self, limit: int, window: TTL, *, id: str = "default", mode: Mode = "sliding"):
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigurationError(f"limit must be an int >= 1, got {limit!r}")
        if not isinstance(id, str) or not id:
            raise ConfigurationError(f"id must be a non-empty str, got {id!r}")
        if mode not in _MODES:
            raise ConfigurationError(f"mode must be 'sliding' or 'fixed', got {mode!r}")
        seconds = _window_seconds(window)
        set_ = object.__setattr__
        set_(self, "limit", limit)
        set_(self, "window", seconds)
        set_(self, "window_ms", max(1, round(seconds * 1000)))
        set_(self, "id", id)
        set_(self, "mode", mode)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"RateLimit is immutable: cannot set {name!r}")

    def _fields(self) -> tuple[int, int, str, str]:
        return (self.limit, self.window_ms, self.id, self.mode)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not RateLimit:
            return NotImplemented
        assert isinstance(other, RateLimit)  # narrowing only
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"RateLimit({self.limit}, {self.window:g}, id={self.id!r}, mode={self.mode!r})"

    @classmethod
    def from_options(cls, options: dict[str, Any], base: RateLimit) -> RateLimit:
        """A rule from a dict of options (``limit``, ``window``, ``id``, ``mode``).

        Missing options come from ``base``, except ``id``, which defaults to ``"default"``
        (GramIO's behaviour: give each handler's rule its own ``id``).

        Raises:
            ConfigurationError: An unknown option, or an invalid value.
        """
        unknown = set(options) - {"limit", "window", "id", "mode"}
        if unknown:
            raise ConfigurationError(
                f"Unknown rate limit option(s) {sorted(unknown)}: use limit, window, id, mode"
            )
        return cls(
            options.get("limit", base.limit),
            options.get("window", base.window),
            id=options.get("id", "default"),
            mode=options.get("mode", base.mode),
        )


@dataclass(slots=True)
class RateLimitResult:
    """The answer to one check. True in a boolean context when the request is admitted.

    A plain dataclass (not frozen: building a frozen one costs 3x more, on every check).

    Attributes:
        allowed: Whether the request is admitted.
        count: Requests counted in the current window, this one included when admitted (in
            fixed mode refused ones count too).
        limit: The rule's limit.
        retry_after: Seconds until a request would be admitted again (0 when admitted).
        key: The storage key the requests are counted under.
    """

    allowed: bool
    count: int
    limit: int
    retry_after: float
    key: str

    @property
    def remaining(self) -> int:
        """Requests still admitted in the current window."""
        return max(0, self.limit - self.count)

    def __bool__(self) -> bool:
        return self.allowed


def _timestamps(value: Any, now: int, window_ms: int) -> list[Any]:
    """The stored timestamps still inside the window (anything else in the value is dropped)."""
    if value.__class__ is not list:
        return []  # missing, or not GramIO's array: start over, as GramIO does
    return [
        t for t in value if (t.__class__ is int or t.__class__ is float) and now - t < window_ms
    ]


class RateLimiter:
    """Counts requests per user in a storage and answers whether each one is admitted.

    Args:
        storage: Where the counters live; a new ``MemoryStorage()`` (this process only) when
            ``None``. Share the bot's storage to limit across processes. Never closed here.
        limit: The default rule's limit (requests per window).
        window: The default rule's window (seconds or ``timedelta``).
        id: The default rule's id (``"default"``).
        mode: The default rule's mode (``"sliding"``).
        clock: Returns the current time in seconds since the epoch (``time.time`` by
            default). Timestamps are shared between processes and with GramIO bots, so it must
            be a wall clock; tests pass a fake one.

    Raises:
        ConfigurationError: ``storage`` is not a gramio-storage backend, ``clock`` is not
            callable, or the default rule is invalid.
        InvalidTTLError: ``window`` is invalid.
    """

    def __init__(
        self,
        storage: BaseStorage | None = None,
        *,
        limit: int,
        window: TTL,
        id: str = "default",
        mode: Mode = "sliding",
        clock: Callable[[], float] | None = None,
    ) -> None:
        if storage is None:
            from ..memory import MemoryStorage

            storage = MemoryStorage()
        elif not isinstance(storage, BaseStorage):
            raise ConfigurationError(
                "RateLimiter needs a gramio-storage backend (a BaseStorage), "
                f"got {storage.__class__.__qualname__}"
            )
        if clock is not None and not callable(clock):
            raise ConfigurationError(f"clock must be a callable returning seconds, got {clock!r}")
        self.storage = storage
        self.rule = RateLimit(limit, window, id=id, mode=mode)
        self.clock: Callable[[], float] = time.time if clock is None else clock
        caps = getattr(storage, "capabilities", None)
        min_ttl: Any = getattr(caps, "min_ttl", None) or getattr(storage, "min_ttl", 0.0)
        self._min_ttl = float(min_ttl)  # Cloudflare KV: 60 s
        self._atomic = True  # until the backend says it cannot update() atomically

    def _now_ms(self) -> int:
        try:
            return math.floor(self.clock() * 1000)
        except (TypeError, ValueError, OverflowError) as e:  # not a number, NaN, infinite
            raise ConfigurationError(f"clock() must return finite seconds: {e}") from None

    def key(self, who: Who, rule: RateLimit | None = None) -> str:
        """The storage key counting ``who`` under ``rule`` (the default rule when ``None``).

        ``rl:<id>:<who>`` in sliding mode (GramIO's), ``rl:<id>:<who>:<window number>`` in
        fixed mode (the current window's).

        Raises:
            InvalidKeyError: ``who`` is not an int or a non-empty str.
        """
        rule = self._rule(rule)
        return _key(_who(who), rule, self._now_ms() if rule.mode == "fixed" else 0)

    async def hit(self, who: Who, rule: RateLimit | None = None) -> RateLimitResult:
        """Count one request of ``who`` and answer whether it is admitted.

        Args:
            who: Whose request (a user id, usually).
            rule: The rule to apply; the limiter's default rule when ``None``.

        Raises:
            InvalidKeyError: ``who`` is not an int or a non-empty str.
            UnsupportedOperationError: Fixed mode on a backend without ``incr`` (Cloudflare KV).
        """
        rule = self._rule(rule)
        now = self._now_ms()
        key = _key(_who(who), rule, now)
        if rule.mode == "fixed":
            count = await self.storage.incr(key, ttl=self._ttl(rule))
            allowed = count <= rule.limit
            retry = 0.0 if allowed else _fixed_retry(rule, now)
            return RateLimitResult(allowed, count, rule.limit, retry, key)
        window_ms, limit = rule.window_ms, rule.limit
        outcome: list[Any] = []

        def admit(value: Any) -> list[Any]:
            stamps = _timestamps(value, now, window_ms)
            allowed = len(stamps) < limit
            outcome[:] = (allowed, stamps)  # Redis may call this again: the last call counts
            if not allowed:
                raise _Refused  # leaves the value as it is: a refusal writes nothing
            stamps.append(now)
            return stamps

        try:  # noqa: SIM105 - try/except costs a tenth of contextlib.suppress, on every check
            await self._update(key, admit, rule)
        except _Refused:
            pass
        allowed, stamps = outcome
        return RateLimitResult(
            allowed, len(stamps), limit, _sliding_retry(stamps, allowed, rule, now), key
        )

    async def peek(self, who: Who, rule: RateLimit | None = None) -> RateLimitResult:
        """Answer whether a request of ``who`` would be admitted now, without counting it."""
        rule = self._rule(rule)
        now = self._now_ms()
        key = _key(_who(who), rule, now)
        value = await self.storage.get(key)
        if rule.mode == "fixed":
            count = value if value.__class__ is int else 0
            allowed = count < rule.limit
            retry = 0.0 if allowed else _fixed_retry(rule, now)
            return RateLimitResult(allowed, count, rule.limit, retry, key)
        stamps = _timestamps(value, now, rule.window_ms)
        allowed = len(stamps) < rule.limit
        return RateLimitResult(
            allowed, len(stamps), rule.limit, _sliding_retry(stamps, allowed, rule, now), key
        )

    async def reset(self, who: Who, rule: RateLimit | None = None) -> bool:
        """Forget the requests of ``who`` under ``rule`` (the current window's, in fixed mode).

        Returns:
            Whether anything was stored.
        """
        return await self.storage.delete(self.key(who, rule))

    # ------------------------------------------------------------------ internals

    def _rule(self, rule: RateLimit | None) -> RateLimit:
        if rule is None:
            return self.rule
        if rule.__class__ is not RateLimit:
            raise ConfigurationError(f"rule must be a RateLimit, got {rule!r}")
        return rule

    def _ttl(self, rule: RateLimit) -> float:
        # The key outlives its newest timestamp by one window: nothing in it matters after that.
        return max(rule.window, self._min_ttl)

    async def _update(self, key: str, fn: Callable[[Any], list[Any]], rule: RateLimit) -> None:
        ttl = self._ttl(rule)
        if self._atomic:
            try:
                await self.storage.update(key, fn, ttl=ttl)
                return
            except UnsupportedOperationError:
                self._atomic = False  # Cloudflare KV: GramIO's read-then-write, not atomic
        await self.storage.set(key, fn(await self.storage.get(key)), ttl=ttl)

    def __repr__(self) -> str:
        rule = self.rule
        return (
            f"RateLimiter({self.storage!r}, limit={rule.limit}, window={rule.window:g}, "
            f"id={rule.id!r}, mode={rule.mode!r})"
        )


def _who(who: object) -> str:
    if who.__class__ is int:
        return str(who)
    if isinstance(who, str) and who:
        return who
    if isinstance(who, int) and not isinstance(who, bool):
        return str(int(who))
    raise InvalidKeyError(f"who must be an int or a non-empty str, got {who!r}")


def _key(who: str, rule: RateLimit, now: int) -> str:
    if rule.mode == "sliding":
        return f"rl:{rule.id}:{who}"  # GramIO's key
    return f"rl:{rule.id}:{who}:{now // rule.window_ms}"


def _sliding_retry(stamps: list[Any], allowed: bool, rule: RateLimit, now: int) -> float:
    if allowed:
        return 0.0
    # Below the limit again once the oldest len - limit + 1 timestamps have left the window.
    ordered = sorted(stamps)
    oldest_to_wait_for: float = ordered[len(ordered) - rule.limit]
    return max(0.0, (oldest_to_wait_for + rule.window_ms - now) / 1000)


def _fixed_retry(rule: RateLimit, now: int) -> float:
    return ((now // rule.window_ms + 1) * rule.window_ms - now) / 1000
