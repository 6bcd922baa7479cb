"""The ``AsyncTeleBot`` state storage, and the record logic the synchronous one shares."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .._errors import (
    ConfigurationError,
    DecodeError,
    InvalidTTLError,
    MissingDependencyError,
    StorageError,
    UnsupportedOperationError,
)
from .._storage import BaseStorage

try:
    from telebot.asyncio_storage import StateStorageBase
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "gramio_storage.telebot needs pyTelegramBotAPI. "
        "Install it with: pip install 'gramio-storage[telebot]'"
    ) from e

if TYPE_CHECKING:
    from types import TracebackType

    from .._protocol import TTL

__all__ = ["AsyncStateData", "AsyncTeleBotStorage", "StateNotSetError", "build_key"]

Record = dict[str, Any]
"""What is stored per user: ``{"state": "Form:name", "data": {...}}``."""


class StateNotSetError(StorageError, RuntimeError):
    """``set_data`` for a user who has no state: there is no record to add data to.

    telebot's own storages raise a plain ``RuntimeError`` here, which this error also is.
    """


class _NoRecord(Exception):
    """Raised inside ``update()`` to leave a missing record missing (nothing is written)."""


def build_key(
    prefix: str,
    separator: str,
    chat_id: int | None,
    user_id: int | None,
    business_connection_id: str | None = None,
    message_thread_id: int | None = None,
    bot_id: int | None = None,
) -> str:
    """The key telebot's own storages use: ``telebot:<bot>:<business>:<thread>:<chat>:<user>``.

    Parts that are missing (or falsy, exactly as in telebot's ``StateStorageBase._get_key``)
    are left out, so a private chat of bot 123 is ``telebot:123:42:42``.
    """
    parts = [prefix]
    if bot_id:
        parts.append(str(bot_id))
    if business_connection_id:
        parts.append(str(business_connection_id))
    if message_thread_id:
        parts.append(str(message_thread_id))
    parts.append(str(chat_id))
    parts.append(str(user_id))
    return separator.join(parts)


def _check_ttl(ttl: TTL | None) -> None:
    if ttl is None:
        return
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise InvalidTTLError(
            f"ttl must be seconds (int or float) or a timedelta, got {ttl.__class__.__qualname__}"
        )
    if not 0.0 < seconds < math.inf:
        raise InvalidTTLError(f"ttl must be a positive, finite duration, got {ttl!r}")


def _check_part(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{name} must be a non-empty str, got {value!r}")
    return value


def _state_name(state: Any) -> Any:
    # telebot stores a State object under its name ("Form:name"); str and int states as they are.
    return state.name if hasattr(state, "name") else state


def _diff(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Top-level fields changed or added in ``after``, and fields removed from ``before``."""
    changed = {
        k: v
        for k, v in after.items()
        if k not in before or before[k].__class__ is not v.__class__ or before[k] != v
    }
    removed = [k for k in before if k not in after]
    return changed, removed


class AsyncTeleBotStorage(StateStorageBase):
    """A state storage for ``AsyncTeleBot`` over any gramio-storage backend.

    ::

        from telebot.async_telebot import AsyncTeleBot
        from gramio_storage import storage_from_url
        from gramio_storage.telebot import AsyncTeleBotStorage

        states = AsyncTeleBotStorage(storage_from_url("sqlite:///bot.db"))
        bot = AsyncTeleBot(TOKEN, state_storage=states)

    It answers as telebot's ``StateMemoryStorage`` does, under the same keys
    (``telebot:<bot id>:<business connection>:<thread>:<chat>:<user>``), one JSON value
    ``{"state": ..., "data": {...}}`` per user and chat. Every write is one atomic
    :meth:`~gramio_storage.BaseStorage.update`, so two updates racing on one user (in one process
    or in several) never lose a field; on a backend without atomic updates (Cloudflare KV) it
    falls back to read-then-write, as telebot's own storages do.

    Differences from telebot's storages, all on purpose:

    * ``get_data`` returns a copy: mutating it changes nothing (use ``get_interactive_data``).
    * ``get_interactive_data`` writes once at exit, only the fields the block changed (merged
      atomically into what is stored), and nothing if the block raised; the exception
      propagates (telebot's context managers save anyway and then swallow the exception).

    Args:
        storage: The backend (or a ``with_prefix`` view of it). Not closed by :meth:`close`
            unless :meth:`from_url` created it.
        prefix: First part of every key (telebot's ``prefix``, ``"telebot"`` by default).
        separator: Between the key's parts (``":"``).
        ttl: Expire a user's state and data this long after their last write (seconds or
            ``timedelta``); never by default.

    Raises:
        ConfigurationError: ``storage`` is not a gramio-storage backend, or ``prefix`` or
            ``separator`` is empty.
        InvalidTTLError: ``ttl`` is not a positive duration.
    """

    def __init__(
        self,
        storage: BaseStorage,
        *,
        prefix: str = "telebot",
        separator: str = ":",
        ttl: TTL | None = None,
    ) -> None:
        if not isinstance(storage, BaseStorage):
            raise ConfigurationError(
                "AsyncTeleBotStorage needs a gramio-storage backend (a BaseStorage), "
                f"got {storage.__class__.__qualname__}"
            )
        _check_ttl(ttl)
        super().__init__()
        self.storage = storage
        self.prefix = _check_part("prefix", prefix)
        self.separator = _check_part("separator", separator)
        self.ttl = ttl
        self._owns_storage = False
        self._atomic = True  # until the backend says it cannot update() atomically
        # A storage keeping references (MemoryStorage(codec=None)) hands out its own objects.
        self._copy = not isinstance(storage.codec.encode({}), bytes)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> AsyncTeleBotStorage:
        """Build from a storage URL (``sqlite:///bot.db``, ``redis://...``); owns the backend.

        Args:
            url: Any URL :func:`~gramio_storage.storage_from_url` understands.
            **kwargs: ``prefix``, ``separator``, ``ttl``.
        """
        from .._registry import storage_from_url

        states = cls(storage_from_url(url), **kwargs)
        states._owns_storage = True
        return states

    def key(
        self,
        chat_id: int | None,
        user_id: int | None,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> str:
        """The storage key of one user's record (relative to the storage's own prefix)."""
        return build_key(
            self.prefix,
            self.separator,
            chat_id,
            user_id,
            business_connection_id,
            message_thread_id,
            bot_id,
        )

    # ------------------------------------------------------------------ telebot's interface

    async def set_state(
        self,
        chat_id: int,
        user_id: int,
        state: Any,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Set the state (a ``State`` is stored as its name), keeping the data; return True."""
        name = self.key(chat_id, user_id, business_connection_id, message_thread_id, bot_id)
        value = _state_name(state)

        def put(record: Record | None) -> Record:
            if record is None:
                return {"state": value, "data": {}}
            record = self._record(name, record)
            record["state"] = value
            return record

        await self._modify(name, put)
        return True

    async def get_state(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> Any:
        """The state name, or ``None`` when the user has none."""
        name = self.key(chat_id, user_id, business_connection_id, message_thread_id, bot_id)
        record = await self.storage.get(name)
        return None if record is None else self._record(name, record).get("state")

    async def delete_state(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Delete the state *and* the data; return whether there was a record."""
        name = self.key(chat_id, user_id, business_connection_id, message_thread_id, bot_id)
        return await self.storage.delete(name)

    async def set_data(
        self,
        chat_id: int,
        user_id: int,
        key: str,
        value: Any,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Set one field of the data atomically; return True.

        Raises:
            StateNotSetError: The user has no state (telebot's storages raise ``RuntimeError``).
        """
        name = self.key(chat_id, user_id, business_connection_id, message_thread_id, bot_id)

        def put(record: Record | None) -> Record:
            if record is None:
                raise StateNotSetError(
                    f"No state is set under {name!r}: set a state before adding data",
                    key=name,
                    backend=self.storage.backend_name,
                )
            record = self._record(name, record)
            record["data"][key] = value
            return record

        await self._modify(name, put)
        return True

    async def get_data(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> dict[str, Any]:
        """The data (a fresh dict; ``{}`` when there is no record)."""
        name = self.key(chat_id, user_id, business_connection_id, message_thread_id, bot_id)
        record = await self.storage.get(name)
        if record is None:
            return {}
        data: dict[str, Any] = self._record(name, record)["data"]
        return copy.deepcopy(data) if self._copy else data

    async def reset_data(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Empty the data, keeping the state; return False when there is no record."""
        name = self.key(chat_id, user_id, business_connection_id, message_thread_id, bot_id)
        return await self._replace_data(name, lambda data: {})

    def get_interactive_data(
        self,
        chat_id: int,
        user_id: int,
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> AsyncStateData:
        """``async with storage.get_interactive_data(...) as data:`` edits the data in place.

        Read on entry; at exit the fields the block changed are written in one atomic update
        (nothing when nothing changed, when the block raised, or when the user has no state).
        """
        name = self.key(chat_id, user_id, business_connection_id, message_thread_id, bot_id)
        return AsyncStateData(self, name)

    async def save(
        self,
        chat_id: int,
        user_id: int,
        data: dict[str, Any],
        business_connection_id: str | None = None,
        message_thread_id: int | None = None,
        bot_id: int | None = None,
    ) -> bool:
        """Replace the data; return False (writing nothing) when there is no record."""
        name = self.key(chat_id, user_id, business_connection_id, message_thread_id, bot_id)
        new = dict(data)
        return await self._replace_data(name, lambda current: new)

    async def close(self) -> None:
        """Close the backend if :meth:`from_url` created it; otherwise leave it to its owner."""
        if self._owns_storage:
            await self.storage.close()

    # ------------------------------------------------------------------ internals

    async def _patch(self, name: str, changed: dict[str, Any], removed: list[str]) -> bool:
        """Merge ``changed`` into the stored data and drop ``removed``, atomically."""

        def apply(data: dict[str, Any]) -> dict[str, Any]:
            data.update(changed)
            for k in removed:
                data.pop(k, None)
            return data

        return await self._replace_data(name, apply)

    async def _replace_data(
        self, name: str, fn: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> bool:
        def put(record: Record | None) -> Record:
            if record is None:
                raise _NoRecord
            record = self._record(name, record)
            record["data"] = fn(record["data"])
            return record

        try:
            await self._modify(name, put)
        except _NoRecord:
            return False
        return True

    async def _modify(self, name: str, fn: Callable[[Record | None], Record]) -> None:
        if self._atomic:
            try:
                await self.storage.update(name, fn, ttl=self.ttl)
                return
            except UnsupportedOperationError:
                self._atomic = False  # Cloudflare KV: read, then write (as telebot does)
        await self.storage.set(name, fn(await self.storage.get(name)), ttl=self.ttl)

    def _record(self, name: str, value: Any) -> Record:
        if value.__class__ is not dict or value.get("data", {}).__class__ is not dict:
            raise DecodeError(
                f"The telebot record stored under {name!r} is not "
                '{"state": ..., "data": {...}}',
                key=name,
                backend=self.storage.backend_name,
            )
        value.setdefault("data", {})
        return value

    def __repr__(self) -> str:
        return f"AsyncTeleBotStorage({self.storage!r}, prefix={self.prefix!r})"


class AsyncStateData:
    """What :meth:`AsyncTeleBotStorage.get_interactive_data` returns (``async with``).

    Attributes:
        data: The dict the block edits (``None`` before entry).
        saved: After exit: whether anything was written.
    """

    def __init__(self, states: AsyncTeleBotStorage, name: str) -> None:
        self._states = states
        self._name = name
        self._before: dict[str, Any] = {}
        self.data: dict[str, Any] | None = None
        self.saved = False

    async def __aenter__(self) -> dict[str, Any]:
        states = self._states
        record = await states.storage.get(self._name)
        data = {} if record is None else states._record(self._name, record)["data"]
        self._before = copy.deepcopy(data)
        self.data = copy.deepcopy(data) if states._copy else data
        return self.data

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None or self.data is None:
            return  # the block failed: nothing is saved, and the exception propagates
        changed, removed = _diff(self._before, self.data)
        if changed or removed:
            self.saved = await self._states._patch(self._name, changed, removed)
