"""pyTelegramBotAPI (telebot): rate limit middlewares for ``AsyncTeleBot`` and ``TeleBot``.

::

    from gramio_storage.ratelimit import RateLimiter
    from gramio_storage.ratelimit.telebot import AsyncRateLimitMiddleware, RateLimitMiddleware

    limiter = RateLimiter(storage, limit=20, window=60)
    async_bot.setup_middleware(AsyncRateLimitMiddleware(limiter))

    # TeleBot(..., use_class_middlewares=True); share the state storage's loop thread
    # when the limiter uses the same backend object:
    sync_bot.setup_middleware(RateLimitMiddleware(limiter, loop=states.loop))

telebot runs middlewares before it picks a handler, so a middleware limits every update of
its ``update_types``; for a stricter rule on one command, add a second middleware with that
rule and a ``key`` that answers ``None`` for other messages.

Install with ``pip install 'gramio-storage[telebot]'``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from .._errors import ConfigurationError, MissingDependencyError
from . import RateLimit, RateLimiter, RateLimitResult, Who

try:
    from telebot.asyncio_handler_backends import BaseMiddleware as _AsyncBase
    from telebot.asyncio_handler_backends import CancelUpdate as _AsyncCancel
    from telebot.handler_backends import BaseMiddleware as _SyncBase
    from telebot.handler_backends import CancelUpdate as _SyncCancel
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "gramio_storage.ratelimit.telebot needs pyTelegramBotAPI. "
        "Install it with: pip install 'gramio-storage[telebot]'"
    ) from e

from ..telebot import LoopThread

__all__ = ["AsyncRateLimitMiddleware", "RateLimitMiddleware", "sender_or_chat"]

UPDATE_TYPES = ("message", "edited_message", "callback_query", "inline_query")
"""The update types limited by default: what a user sends."""

OnLimit = Callable[[Any, RateLimitResult], Any]
"""Called as ``on_limit(update_object, result)`` for a refused update."""


def sender_or_chat(obj: Any) -> int | None:
    """Whose requests count: ``from_user`` (or ``user``), else the chat (channel posts)."""
    user = getattr(obj, "from_user", None) or getattr(obj, "user", None)
    if user is not None:
        return int(user.id)
    chat = getattr(obj, "chat", None)
    return None if chat is None else int(chat.id)


class _Options:
    def __init__(
        self,
        limiter: RateLimiter,
        rule: RateLimit | None,
        update_types: Iterable[str],
        key: Callable[[Any], Who | None],
        on_limit: OnLimit | None,
    ) -> None:
        if not isinstance(limiter, RateLimiter):
            raise ConfigurationError(f"limiter must be a RateLimiter, got {limiter!r}")
        if rule is not None and not isinstance(rule, RateLimit):
            raise ConfigurationError(f"rule must be a RateLimit, got {rule!r}")
        if not callable(key) or (on_limit is not None and not callable(on_limit)):
            raise ConfigurationError("key and on_limit must be callables")
        types = [update_types] if isinstance(update_types, str) else list(update_types)
        if not types or not all(isinstance(t, str) and t for t in types):
            raise ConfigurationError(f"update_types must name update types, got {update_types!r}")
        self.limiter = limiter
        self.rule = rule
        self.update_types = types
        self.key = key
        self.on_limit = on_limit


class AsyncRateLimitMiddleware(_AsyncBase):
    """Drops updates beyond the limit before any ``AsyncTeleBot`` handler sees them.

    An admitted update's handlers can take the :class:`RateLimitResult` as a ``rate_limit``
    argument; a refused one runs ``on_limit`` (may be async) and is cancelled (telebot's
    ``CancelUpdate``: no handler, no later middleware).

    Args:
        limiter: The limiter (storage, default rule, clock).
        rule: The rule; the limiter's default when ``None``.
        update_types: Which updates to limit.
        key: ``update_object -> who``; the sender, else the chat. ``None``: not limited.
        on_limit: Called as ``on_limit(update_object, result)`` for a refused update.

    Raises:
        ConfigurationError: A bad argument.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        rule: RateLimit | None = None,
        *,
        update_types: Iterable[str] = UPDATE_TYPES,
        key: Callable[[Any], Who | None] = sender_or_chat,
        on_limit: OnLimit | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # telebot: untyped, does nothing
        self._options = options = _Options(limiter, rule, update_types, key, on_limit)
        self.update_sensitive = False
        self.update_types = options.update_types

    async def pre_process(self, message: Any, data: dict[str, Any]) -> Any:
        """Count the update; cancel it when it is beyond the limit."""
        options = self._options
        who = options.key(message)
        if who is None:
            return None
        result = await options.limiter.hit(who, options.rule)
        data["rate_limit"] = result
        if result.allowed:
            return None
        if options.on_limit is not None:
            outcome = options.on_limit(message, result)
            if inspect.isawaitable(outcome):
                await outcome
        return _AsyncCancel()

    async def post_process(self, message: Any, data: dict[str, Any], exception: Any) -> None:
        """Nothing to do after the handler."""
        return None


class RateLimitMiddleware(_SyncBase):
    """Drops updates beyond the limit before any ``TeleBot`` handler sees them.

    Needs ``TeleBot(..., use_class_middlewares=True)``. The limiter's backend is async: it runs
    on a :class:`~gramio_storage.telebot.LoopThread` (a background event loop thread). Pass the
    one of your :class:`~gramio_storage.telebot.TeleBotStorage` (``loop=states.loop``) when the
    limiter uses the same storage object, since a backend's connections belong to one loop;
    without ``loop`` the middleware starts its own, closed by :meth:`close`.

    Args:
        limiter: The limiter (storage, default rule, clock).
        rule: The rule; the limiter's default when ``None``.
        update_types: Which updates to limit.
        key: ``update_object -> who``; the sender, else the chat. ``None``: not limited.
        on_limit: Called as ``on_limit(update_object, result)`` for a refused update (a plain
            function: this is the synchronous bot).
        loop: The loop thread to run the limiter on.
        timeout: Seconds a check may take before ``BackendTimeoutError`` (own loop only).

    Raises:
        ConfigurationError: A bad argument.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        rule: RateLimit | None = None,
        *,
        update_types: Iterable[str] = UPDATE_TYPES,
        key: Callable[[Any], Who | None] = sender_or_chat,
        on_limit: OnLimit | None = None,
        loop: LoopThread | None = None,
        timeout: float = 30.0,
    ) -> None:
        if loop is not None and not isinstance(loop, LoopThread):
            raise ConfigurationError(f"loop must be a LoopThread, got {loop!r}")
        super().__init__()  # type: ignore[no-untyped-call]  # telebot: untyped, does nothing
        self._options = options = _Options(limiter, rule, update_types, key, on_limit)
        self.update_sensitive = False
        self.update_types = options.update_types
        self.loop = LoopThread(timeout=timeout) if loop is None else loop
        self._owns_loop = loop is None

    def pre_process(self, message: Any, data: dict[str, Any]) -> Any:
        """Count the update; cancel it when it is beyond the limit."""
        options = self._options
        who = options.key(message)
        if who is None:
            return None
        result = self.loop.run(options.limiter.hit(who, options.rule))
        data["rate_limit"] = result
        if result.allowed:
            return None
        if options.on_limit is not None:
            options.on_limit(message, result)
        return _SyncCancel()

    def post_process(self, message: Any, data: dict[str, Any], exception: Any) -> None:
        """Nothing to do after the handler."""
        return None

    def close(self) -> None:
        """Stop the loop thread if this middleware started it."""
        if self._owns_loop:
            self.loop.close()
