"""aiogram 3: a rate limit middleware with per-handler rules in aiogram flags.

::

    from aiogram import Router, flags
    from gramio_storage.ratelimit import RateLimiter
    from gramio_storage.ratelimit.aiogram import RateLimitMiddleware

    router = Router()
    router.message.middleware(RateLimitMiddleware(RateLimiter(storage, limit=20, window=60)))

    @router.message(Command("pay"), flags={"rate_limit": {"limit": 3, "window": 60, "id": "pay"}})
    async def pay(message: Message) -> None: ...

    @router.message(Command("help"))
    @flags.rate_limit(False)                 # never limited
    async def help(message: Message) -> None: ...

Install with ``pip install 'gramio-storage[aiogram]'``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._errors import ConfigurationError, MissingDependencyError
from . import RateLimit, RateLimiter, RateLimitResult, Who

try:
    from aiogram.dispatcher.flags import get_flag
    from aiogram.dispatcher.middlewares.base import BaseMiddleware
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "gramio_storage.ratelimit.aiogram needs aiogram. "
        "Install it with: pip install 'gramio-storage[aiogram]'"
    ) from e

if TYPE_CHECKING:
    from aiogram.types import TelegramObject

__all__ = ["OnLimit", "RateLimitMiddleware", "sender_or_chat"]

OnLimit = Callable[["TelegramObject", RateLimitResult], Any]
"""Called with the event and the refusal; may be a coroutine function."""

WhoFn = Callable[["TelegramObject", dict[str, Any]], "Who | None"]


def sender_or_chat(event: TelegramObject, data: dict[str, Any]) -> int | None:
    """Whose requests count (GramIO's default): the sender, else the chat (channel posts)."""
    user = data.get("event_from_user")
    if user is not None:
        return int(user.id)
    chat = data.get("event_chat")
    return None if chat is None else int(chat.id)


class RateLimitMiddleware(BaseMiddleware):
    """Refuses updates beyond a rate limit before they reach the handler.

    Register it as an **inner** middleware of an observer (``router.message.middleware(...)``):
    it then runs after the filters chose a handler, so it can read that handler's flag. Each
    handler's flag ``rate_limit`` (the name is ``flag``) decides:

    * absent: the limiter's default rule (unless ``flagged_only``: then no limit);
    * ``False``: no limit; ``True``: the default rule;
    * a :class:`~gramio_storage.ratelimit.RateLimit`, or a dict of its options (``limit``,
      ``window``, ``id``, ``mode``; missing ones from the default rule, ``id`` ``"default"``
      as in GramIO) plus an optional ``on_limit`` for this handler.

    An admitted update's handler receives the :class:`RateLimitResult` as ``rate_limit``. A
    refused one is dropped after ``on_limit`` (the handler's, else the middleware's) ran.

    Args:
        limiter: The limiter (storage, default rule, clock).
        key: ``(event, data) -> who``; the sender, else the chat, by default. ``None``
            means "do not limit this update".
        on_limit: Called as ``on_limit(event, result)`` for a refused update (may be async),
            for example to answer "too many requests".
        flag: The handler flag holding the rule.
        flagged_only: Limit only handlers that have the flag (GramIO's macro behaviour).

    Raises:
        ConfigurationError: ``limiter`` is not a ``RateLimiter``, or ``key``/``on_limit`` is
            not callable.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        key: WhoFn = sender_or_chat,
        on_limit: OnLimit | None = None,
        flag: str = "rate_limit",
        flagged_only: bool = False,
    ) -> None:
        if not isinstance(limiter, RateLimiter):
            raise ConfigurationError(f"limiter must be a RateLimiter, got {limiter!r}")
        if not callable(key) or (on_limit is not None and not callable(on_limit)):
            raise ConfigurationError("key and on_limit must be callables")
        if not isinstance(flag, str) or not flag:
            raise ConfigurationError(f"flag must be a non-empty str, got {flag!r}")
        self.limiter = limiter
        self.key = key
        self.on_limit = on_limit
        self.flag = flag
        self.flagged_only = flagged_only
        # Parsed dict flags by id(); the dict is kept, so its id cannot be reused.
        self._parsed: dict[int, tuple[object, RateLimit, OnLimit | None]] = {}

    def _rule(self, spec: object) -> tuple[RateLimit | None, OnLimit | None] | None:
        """``None`` for "no limit", else the rule (``None``: the default) and its on_limit."""
        if spec is None:
            return None if self.flagged_only else (None, self.on_limit)
        if spec is False:
            return None
        if spec is True:
            return None, self.on_limit
        if isinstance(spec, RateLimit):
            return spec, self.on_limit
        if isinstance(spec, Mapping):
            cached = self._parsed.get(id(spec))
            if cached is None or cached[0] is not spec:
                options = dict(spec)
                on_limit = options.pop("on_limit", None)
                if on_limit is not None and not callable(on_limit):
                    raise ConfigurationError(f"on_limit must be callable, got {on_limit!r}")
                rule = RateLimit.from_options(options, self.limiter.rule)
                cached = self._parsed[id(spec)] = (spec, rule, on_limit)
            return cached[1], cached[2] or self.on_limit
        raise ConfigurationError(
            f"The {self.flag!r} flag must be a RateLimit, a dict of its options, True or "
            f"False, got {spec!r}"
        )

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        """Count the update; run the handler if it is admitted, ``on_limit`` if not."""
        chosen = self._rule(get_flag(data, self.flag))
        if chosen is None:
            return await handler(event, data)
        who = self.key(event, data)
        if who is None:
            return await handler(event, data)
        rule, on_limit = chosen
        result = await self.limiter.hit(who, rule)
        if result.allowed:
            data["rate_limit"] = result
            return await handler(event, data)
        if on_limit is not None:
            outcome = on_limit(event, result)
            if inspect.isawaitable(outcome):
                await outcome
        return None
