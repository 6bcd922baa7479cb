"""The synchronous ``TeleBot`` state storage, and the loop thread it runs the backend on.

gramio-storage backends are async. A synchronous bot calls them through a :class:`LoopThread`:
an event loop running on a daemon thread of its own, to which each call submits its coroutine
(``asyncio.run_coroutine_threadsafe``) and then waits, at most ``timeout`` seconds, for the
result. The caller's thread never runs the backend itself, so this works the same from
telebot's worker threads, from the main thread, and from a thread whose own event loop is
running (that loop is blocked for the call, as by any synchronous call, but not deadlocked).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import math
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import (
    BackendTimeoutError,
    ConfigurationError,
    MissingDependencyError,
    StorageClosedError,
)
from .._storage import BaseStorage
from ._async import AsyncStateData, AsyncTeleBotStorage

try:
    from telebot.storage import StateStorageBase
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "gramio_storage.telebot needs pyTelegramBotAPI. "
        "Install it with: pip install 'gramio-storage[telebot]'"
    ) from e

if TYPE_CHECKING:
    from types import TracebackType

    from .._protocol import TTL

__all__ = ["LoopThread", "StateData", "TeleBotStorage"]

T = TypeVar("T")

_names = itertools.count(1)


def _check_timeout(timeout: object) -> float:
    if (
        not isinstance(timeout, (int, float))
        or isinstance(timeout, bool)
        or not 0 < timeout < math.inf
    ):
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


class LoopThread:
    """An asyncio event loop on a daemon thread it owns, for running coroutines from sync code.

    ::

        loop = LoopThread()
        value = loop.run(storage.get("key"))   # from any thread but the loop's own
        loop.close()

    A backend's connections belong to the loop that opened them: use a storage only through
    one ``LoopThread`` (for example the one of a :class:`TeleBotStorage`, shared with a rate
    limit middleware), not also from another event loop.

    Args:
        timeout: Seconds a :meth:`run` waits before giving up with
            :class:`~gramio_storage.BackendTimeoutError` (the coroutine is then cancelled).
        name: The thread's name.

    Raises:
        ConfigurationError: ``timeout`` is not a positive number.
    """

    def __init__(self, *, timeout: float = 30.0, name: str | None = None) -> None:
        self.timeout = _check_timeout(timeout)
        self._loop = asyncio.new_event_loop()
        self._closed = False
        self._thread = threading.Thread(
            target=self._main,
            name=name or f"gramio-storage-loop-{next(_names)}",
            daemon=True,  # a bot that forgets close() still exits
        )
        self._thread.start()

    def _main(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop (running on :attr:`thread`)."""
        return self._loop

    @property
    def thread(self) -> threading.Thread:
        """The thread running the loop."""
        return self._thread

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result (or raise its exception).

        Args:
            coro: The coroutine.
            timeout: Seconds to wait; the thread's :attr:`timeout` by default.

        Raises:
            BackendTimeoutError: No result within ``timeout``; the coroutine was cancelled.
            StorageClosedError: The loop thread was closed.
            RuntimeError: Called from the loop's own thread, which would wait for itself.
        """
        wait = self.timeout if timeout is None else _check_timeout(timeout)
        if self._closed or not self._thread.is_alive():
            coro.close()
            raise StorageClosedError("The LoopThread is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "A synchronous gramio-storage call was made from its own loop thread (from a "
                "coroutine running on it): it would wait for itself forever. Await the async "
                "API there instead."
            )
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        done, _ = concurrent.futures.wait([future], timeout=wait)
        if not done:
            future.cancel()
            raise BackendTimeoutError(f"The storage call did not finish within {wait:g}s")
        return future.result()

    def close(self, timeout: float | None = None) -> None:
        """Stop the loop (cancelling what still runs on it) and wait for the thread to end.

        Idempotent. Calls after this raise :class:`~gramio_storage.StorageClosedError`.
        """
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            if threading.current_thread() is not self._thread:
                self._thread.join(self.timeout if timeout is None else timeout)

    def __enter__(self) -> LoopThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"LoopThread({self._thread.name!r}, {state}, timeout={self.timeout:g})"


class TeleBotStorage(StateStorageBase):
    """A state storage for the synchronous ``TeleBot`` over any gramio-storage backend.

    ::

        from telebot import TeleBot
        from gramio_storage.telebot import TeleBotStorage

        states = TeleBotStorage.from_url("sqlite:///bot.db")
        bot = TeleBot(TOKEN, state_storage=states, use_class_middlewares=True)
        ...
        bot.infinity_polling()
        states.close()

    Same keys, values and behaviour as :class:`AsyncTeleBotStorage` (it wraps one, available
    as :attr:`async_storage`). The async backend runs on a :class:`LoopThread`: an event loop
    on a daemon thread this storage owns (or one you pass and share). Every call waits at most
    ``timeout`` seconds and then raises :class:`~gramio_storage.BackendTimeoutError`, so a
    backend that stopped answering never hangs telebot's worker threads; calls from any
    thread are safe, also while another event loop runs in it.

    Give it a storage of its own (:meth:`from_url`, or one you opened for it): a backend's
    connections belong to the loop that opened them, and this one is used from the loop thread.

    Args:
        storage: The backend. Not closed by :meth:`close` unless :meth:`from_url` created it.
        prefix: First part of every key (``"telebot"``).
        separator: Between the key's parts (``":"``).
        ttl: Expire a user's record this long after its last write.
        timeout: Seconds each call may take (30).
        loop: Run on this :class:`LoopThread` (left open by :meth:`close`) instead of a new
            one of its own.

    Raises:
        ConfigurationError: A bad ``storage``, ``prefix``, ``separator`` or ``timeout``.
        InvalidTTLError: ``ttl`` is not a positive duration.
    """

    def __init__(
        self,
        storage: BaseStorage,
        *,
        prefix: str = "telebot",
        separator: str = ":",
        ttl: TTL | None = None,
        timeout: float = 30.0,
        loop: LoopThread | None = None,
    ) -> None:
        self.async_storage = AsyncTeleBotStorage(
            storage, prefix=prefix, separator=separator, ttl=ttl
        )
        if loop is not None and not isinstance(loop, LoopThread):
            raise ConfigurationError(f"loop must be a LoopThread, got {loop!r}")
        _check_timeout(timeout)
        super().__init__()
        self.storage = storage
        self.prefix = prefix
        self.separator = separator
        self.timeout = float(timeout)
        self.loop = LoopThread(timeout=timeout) if loop is None else loop
        self._owns_loop = loop is None

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> TeleBotStorage:
        """Build from a storage URL; owns the backend (closed by :meth:`close`).

        Args:
            url: Any URL :func:`~gramio_storage.storage_from_url` understands.
            **kwargs: ``prefix``, ``separator``, ``ttl``, ``timeout``, ``loop``.
        """
        from .._registry import storage_from_url

        states = cls(storage_from_url(url), **kwargs)
        states.async_storage._owns_storage = True
        return states

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(coro, timeout=self.timeout)

    def key(
        self,
        chat_id: int | None,
        user_id: int | None,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> str:
        """The storage key of one user's record."""
        return self.async_storage.key(
            chat_id, user_id, business_connection_id, message_thread_id, bot_id
        )

    def set_state(
        self,
        chat_id: int,
        user_id: int,
        state: Any,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Set the state, keeping the data; return True."""
        return self._run(
            self.async_storage.set_state(
                chat_id, user_id, state, business_connection_id, message_thread_id, bot_id
            )
        )

    def get_state(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> Any:
        """The state name, or ``None``."""
        return self._run(
            self.async_storage.get_state(
                chat_id, user_id, business_connection_id, message_thread_id, bot_id
            )
        )

    def delete_state(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Delete the state and the data; return whether there was a record."""
        return self._run(
            self.async_storage.delete_state(
                chat_id, user_id, business_connection_id, message_thread_id, bot_id
            )
        )

    def set_data(
        self,
        chat_id: int,
        user_id: int,
        key: str,
        value: Any,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Set one field of the data atomically; raises ``StateNotSetError`` without a state."""
        return self._run(
            self.async_storage.set_data(
                chat_id, user_id, key, value, business_connection_id, message_thread_id, bot_id
            )
        )

    def get_data(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> dict[str, Any]:
        """The data (a fresh dict; ``{}`` when there is no record)."""
        return self._run(
            self.async_storage.get_data(
                chat_id, user_id, business_connection_id, message_thread_id, bot_id
            )
        )

    def reset_data(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Empty the data, keeping the state; False when there is no record."""
        return self._run(
            self.async_storage.reset_data(
                chat_id, user_id, business_connection_id, message_thread_id, bot_id
            )
        )

    def get_interactive_data(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> StateData:
        """``with storage.get_interactive_data(...) as data:``; saves changed fields at exit."""
        return StateData(
            self,
            self.async_storage.get_interactive_data(
                chat_id, user_id, business_connection_id, message_thread_id, bot_id
            ),
        )

    def save(
        self,
        chat_id: int,
        user_id: int,
        data: dict[str, Any],
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Replace the data; False (nothing written) when there is no record."""
        return self._run(
            self.async_storage.save(
                chat_id, user_id, data, business_connection_id, message_thread_id, bot_id
            )
        )

    def close(self) -> None:
        """Close the backend if :meth:`from_url` created it, then the loop thread if owned.

        Idempotent. A ``loop`` you passed in stays open.
        """
        try:
            if not self.loop.closed:
                self._run(self.async_storage.close())
        finally:
            if self._owns_loop:
                self.loop.close()

    def __enter__(self) -> TeleBotStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TeleBotStorage({self.storage!r}, prefix={self.prefix!r})"


class StateData:
    """What :meth:`TeleBotStorage.get_interactive_data` returns (``with``)."""

    def __init__(self, states: TeleBotStorage, context: AsyncStateData) -> None:
        self._states = states
        self._context = context

    @property
    def data(self) -> dict[str, Any] | None:
        """The dict the block edits (``None`` before entry)."""
        return self._context.data

    @property
    def saved(self) -> bool:
        """After exit: whether anything was written."""
        return self._context.saved

    def __enter__(self) -> dict[str, Any]:
        return self._states._run(self._context.__aenter__())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._states._run(self._context.__aexit__(exc_type, exc, tb))
