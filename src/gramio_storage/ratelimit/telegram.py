"""python-telegram-bot: a rate limit around any handler callback.

::

    from telegram.ext import CommandHandler
    from gramio_storage.ratelimit import RateLimit, RateLimiter
    from gramio_storage.ratelimit.telegram import rate_limited

    limiter = RateLimiter(storage, limit=20, window=60)

    async def too_fast(update, context, result):
        await update.effective_message.reply_text(f"Wait {result.retry_after:.0f} s")

    pay_limited = rate_limited(limiter, RateLimit(3, 60, id="pay"), on_limit=too_fast)
    app.add_handler(CommandHandler("pay", pay_limited(pay)))

For one limit over every update, wrap a no-op ``TypeHandler(Update, ...)`` in group ``-1`` and
raise ``ApplicationHandlerStop`` from ``on_limit``.

Install with ``pip install 'gramio-storage[telegram]'``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import ConfigurationError, MissingDependencyError
from . import RateLimit, RateLimiter, RateLimitResult, Who

try:
    import telegram  # noqa: F401 - fail here, not in the first update, without the extra
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "gramio_storage.ratelimit.telegram needs python-telegram-bot. "
        "Install it with: pip install 'gramio-storage[telegram]'"
    ) from e

if TYPE_CHECKING:
    from telegram import Update

__all__ = ["effective_sender", "rate_limited"]

R = TypeVar("R")
Callback = Callable[["Update", Any], Awaitable[R]]
OnLimit = Callable[["Update", Any, RateLimitResult], Any]
"""Called as ``on_limit(update, context, result)`` for a refused update (may be async)."""


def effective_sender(update: Update) -> int | None:
    """Whose requests count: the update's user, else its chat (channel posts)."""
    if update.effective_user is not None:
        return update.effective_user.id
    if update.effective_chat is not None:
        return update.effective_chat.id
    return None


def rate_limited(
    limiter: RateLimiter,
    rule: RateLimit | None = None,
    *,
    key: Callable[[Update], Who | None] = effective_sender,
    on_limit: OnLimit | None = None,
) -> Callable[[Callback[R]], Callback[R | None]]:
    """Decorate a PTB callback so that requests beyond ``rule`` never reach it.

    A refused update runs ``on_limit`` (if given) and the callback returns ``None``: in a
    ``ConversationHandler`` the conversation stays in its state. An admitted one runs the
    callback as it is (it is not told the result of the check).

    Args:
        limiter: The limiter (storage, default rule, clock).
        rule: The rule; the limiter's default when ``None``.
        key: ``update -> who``; the effective user, else chat. ``None``: not limited.
        on_limit: Called for a refused update, as ``on_limit(update, context, result)``.

    Raises:
        ConfigurationError: A bad ``limiter``, ``rule``, ``key`` or ``on_limit``.
    """
    if not isinstance(limiter, RateLimiter):
        raise ConfigurationError(f"limiter must be a RateLimiter, got {limiter!r}")
    if rule is not None and not isinstance(rule, RateLimit):
        raise ConfigurationError(f"rule must be a RateLimit, got {rule!r}")
    if not callable(key) or (on_limit is not None and not callable(on_limit)):
        raise ConfigurationError("key and on_limit must be callables")

    def decorate(callback: Callback[R]) -> Callback[R | None]:
        if not callable(callback):
            raise ConfigurationError(f"rate_limited(...) decorates a callback, got {callback!r}")

        @functools.wraps(callback)
        async def limited(update: Update, context: Any) -> R | None:
            who = key(update)
            if who is not None:
                result = await limiter.hit(who, rule)
                if not result.allowed:
                    if on_limit is not None:
                        outcome = on_limit(update, context, result)
                        if inspect.isawaitable(outcome):
                            await outcome
                    return None
            return await callback(update, context)

        return limited

    return decorate
