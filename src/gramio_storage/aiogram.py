"""aiogram 3 integration: FSM storage, event isolation and a session middleware.

Any gramio-storage backend becomes an aiogram FSM storage, with atomic ``update_data`` and a lock
that works across processes::

    from aiogram import Dispatcher
    from gramio_storage import storage_from_url
    from gramio_storage.aiogram import AiogramStorage, SessionMiddleware

    storage = storage_from_url("sqlite:///bot.db")
    fsm = AiogramStorage(storage)
    dp = Dispatcher(storage=fsm, events_isolation=fsm.create_isolation())
    dp.update.outer_middleware(SessionMiddleware(storage, initial=lambda: {"count": 0}))

Keys follow aiogram's :class:`~aiogram.fsm.storage.base.DefaultKeyBuilder` layout
(``fsm:<chat>:<user>:state``), so data written by aiogram's own ``RedisStorage`` stays readable.

Install with ``pip install 'gramio-storage[aiogram]'``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ._errors import DecodeError, MissingDependencyError
from ._protocol import TTL
from ._storage import BaseStorage
from ._validate import resolve_key, ttl_seconds
from .session import Session, SessionManager

try:
    from aiogram.dispatcher.middlewares.base import BaseMiddleware
    from aiogram.exceptions import DataNotDictLikeError
    from aiogram.fsm.state import State
    from aiogram.fsm.storage.base import BaseEventIsolation, DefaultKeyBuilder, KeyBuilder
    from aiogram.fsm.storage.base import BaseStorage as _AiogramBaseStorage
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "gramio_storage.aiogram needs aiogram. "
        "Install it with: pip install 'gramio-storage[aiogram]'"
    ) from e

if TYPE_CHECKING:
    from aiogram.fsm.storage.base import StateType, StorageKey
    from aiogram.types import TelegramObject

__all__ = ["AiogramStorage", "SessionMiddleware", "StorageEventIsolation"]


class AiogramStorage(_AiogramBaseStorage):
    """An aiogram FSM storage over any gramio-storage backend.

    It answers exactly as aiogram's own storages do: ``set_state(None)`` and ``set_data({})``
    delete the record, ``get_data`` of nothing is ``{}``, non-dict data raises aiogram's
    ``DataNotDictLikeError``. ``update_data`` is a single atomic
    :meth:`~gramio_storage.BaseStorage.update`, so two updates racing on one user (or two bot
    processes) never lose a field: aiogram's own storages read and write in two steps. On a
    backend without atomic updates (Cloudflare KV) it falls back to aiogram's read-then-write.

    States are stored as JSON strings (``"Form:name"``); a raw state written by aiogram's
    ``RedisStorage`` (``Form:name``) is read as well. Data is a JSON object, in both directions
    compatible with ``RedisStorage``.

    Args:
        storage: The backend (or a ``with_prefix`` view of it). Not closed by :meth:`close`
            unless it was created by :meth:`from_url`: whoever opened it closes it.
        key_builder: Turns aiogram's ``StorageKey`` into a key; aiogram's ``DefaultKeyBuilder()``
            (``fsm:<chat>:<user>:state``) by default.
        state_ttl: Expire states this long after they were set (seconds or ``timedelta``).
        data_ttl: Expire data this long after it was last written.
    """

    def __init__(
        self,
        storage: BaseStorage,
        key_builder: KeyBuilder | None = None,
        state_ttl: TTL | None = None,
        data_ttl: TTL | None = None,
    ) -> None:
        if not isinstance(storage, BaseStorage):
            raise TypeError(
                "AiogramStorage needs a gramio-storage backend (a BaseStorage), "
                f"got {storage.__class__.__qualname__}"
            )
        for name, ttl in (("state_ttl", state_ttl), ("data_ttl", data_ttl)):
            if ttl is not None:
                # A bad TTL fails here, not mid-conversation.
                ttl_seconds(ttl, storage.capabilities, name)
        self.storage = storage
        self.key_builder: KeyBuilder = DefaultKeyBuilder() if key_builder is None else key_builder
        self.state_ttl = state_ttl
        self.data_ttl = data_ttl
        self._owns_storage = False
        # Declared, not probed: Cloudflare KV has no atomic operations (atomic_ops=False).
        self._atomic = storage.capabilities.atomic_ops
        # A storage keeping references (MemoryStorage(codec=None)) returns its own objects: copy
        # them, as aiogram's MemoryStorage does, so a handler cannot mutate the store by accident.
        self._copy = bool(getattr(storage.codec, "stores_references", False))

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> AiogramStorage:
        """Build from a storage URL (``sqlite:///bot.db``, ``redis://...``); owns the backend.

        Args:
            url: Any URL :func:`~gramio_storage.storage_from_url` understands.
            **kwargs: ``key_builder``, ``state_ttl``, ``data_ttl``.
        """
        from ._registry import storage_from_url

        storage = cls(storage_from_url(url), **kwargs)
        storage._owns_storage = True
        return storage

    def create_isolation(self, **kwargs: Any) -> StorageEventIsolation:
        """A :class:`StorageEventIsolation` over the same backend and key layout."""
        kwargs.setdefault("key_builder", self.key_builder)
        return StorageEventIsolation(self.storage, **kwargs)

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        """Set the state, or delete it when ``state`` is ``None``."""
        name = self.key_builder.build(key, "state")
        value = state.state if isinstance(state, State) else state
        if value is None:
            await self.storage.delete(name)
        else:
            await self.storage.set(name, value, ttl=self.state_ttl)

    async def get_state(self, key: StorageKey) -> str | None:
        """Return the state, or ``None``."""
        name = self.key_builder.build(key, "state")
        try:
            value = await self.storage.get(name)
        except DecodeError:
            return await self._legacy_state(name)
        if value is None or value.__class__ is str:
            return value
        return await self._legacy_state(name)

    async def _legacy_state(self, name: str) -> str | None:
        # aiogram's RedisStorage writes the state's bare text, which is usually not JSON (or is
        # JSON of another type: a state named "1"). Read the raw bytes; this path is rare.
        storage = self.storage
        raw = await storage.backend.get(resolve_key(name, storage.prefix, storage.capabilities))
        if raw is None:
            return None
        try:
            return bytes(raw).decode("utf-8")
        except (TypeError, UnicodeDecodeError) as e:
            raise DecodeError(
                f"The FSM state stored under {name!r} is neither JSON text nor UTF-8",
                key=name,
                backend=storage.backend_name,
            ) from e

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        """Replace the data; ``{}`` deletes it.

        Raises:
            DataNotDictLikeError: ``data`` is not a ``dict`` (aiogram's own error).
        """
        if not isinstance(data, dict):
            raise DataNotDictLikeError(
                f"Data must be a dict or dict-like object, got {type(data).__name__}"
            )
        name = self.key_builder.build(key, "data")
        if data:
            await self.storage.set(name, data, ttl=self.data_ttl)
        else:
            await self.storage.delete(name)

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        """Return the data (a fresh dict; ``{}`` when there is none)."""
        name = self.key_builder.build(key, "data")
        value = await self.storage.get(name)
        if value is None:
            return {}
        if value.__class__ is not dict:
            raise self._not_a_dict(name, value)
        return value.copy() if self._copy else value

    async def update_data(self, key: StorageKey, data: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``data`` into the stored data atomically (``dict.update``); return the result."""
        if not data:
            return await self.get_data(key)
        name = self.key_builder.build(key, "data")
        patch = dict(data)

        def merge(current: Any) -> dict[str, Any]:
            if current is None:
                return patch.copy()
            if current.__class__ is not dict:
                raise self._not_a_dict(name, current)
            current.update(patch)  # ``current`` is update()'s private copy
            return current

        if self._atomic:
            result = await self.storage.update(name, merge, ttl=self.data_ttl)
            return result.copy()  # type: ignore[no-any-return]
        # No atomic update (Cloudflare KV): do what aiogram does (read, then write).
        result = merge(await self.storage.get(name))
        await self.storage.set(name, result, ttl=self.data_ttl)
        return result.copy()

    def _not_a_dict(self, name: str, value: object) -> DecodeError:
        return DecodeError(
            f"The FSM data stored under {name!r} is a {value.__class__.__qualname__}, not a dict",
            key=name,
            backend=self.storage.backend_name,
        )

    async def close(self) -> None:
        """Close the backend if :meth:`from_url` created it; otherwise leave it to its owner."""
        if self._owns_storage:
            await self.storage.close()

    def __repr__(self) -> str:
        return f"AiogramStorage({self.storage!r})"


class StorageEventIsolation(BaseEventIsolation):
    """Serialises the updates of one chat/user across tasks *and* processes, via the storage.

    aiogram runs a user's updates concurrently unless an isolation is set; its
    ``SimpleEventIsolation`` works in one process only and keeps a lock per user forever. This
    one takes a lock key (``fsm:<chat>:<user>:lock``) with an atomic
    :meth:`~gramio_storage.BaseStorage.add` carrying a TTL, and deletes it when the handler is
    done (also when it raised or was cancelled). If the holder dies, the lock expires after
    ``ttl``. Waiters in the same process queue on an in-memory lock that disappears with its
    last user; only one of them polls the storage, with exponential backoff and jitter.

    The backend must have an atomic ``add``: memory (one process), SQLite, PostgreSQL, Redis.
    Cloudflare KV is eventually consistent and cannot lock.

    Args:
        storage: The backend.
        key_builder: Same layout as the FSM storage; ``DefaultKeyBuilder()`` by default.
        ttl: How long a lock survives a holder that died (seconds). A handler running longer
            than this loses exclusivity, so keep it above your slowest handler. Default 60, as
            aiogram's ``RedisEventIsolation``.
        poll_interval: First wait between attempts while another process holds the lock.
        max_poll_interval: Upper bound of the exponential backoff.
    """

    def __init__(
        self,
        storage: BaseStorage,
        key_builder: KeyBuilder | None = None,
        *,
        ttl: TTL = 60,
        poll_interval: float = 0.005,
        max_poll_interval: float = 0.25,
    ) -> None:
        if not isinstance(storage, BaseStorage):
            raise TypeError(
                "StorageEventIsolation needs a gramio-storage backend (a BaseStorage), "
                f"got {storage.__class__.__qualname__}"
            )
        seconds = ttl_seconds(ttl, storage.capabilities, "ttl")
        if not (0 < poll_interval <= max_poll_interval):
            raise ValueError(
                "poll_interval and max_poll_interval must satisfy "
                f"0 < poll_interval <= max_poll_interval, got {poll_interval}, {max_poll_interval}"
            )
        self.storage = storage
        self.key_builder: KeyBuilder = DefaultKeyBuilder() if key_builder is None else key_builder
        self.ttl = seconds
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        # One asyncio.Lock per key being locked *right now*: an entry vanishes when the last
        # task holding or awaiting it lets go (unlike aiogram's SimpleEventIsolation).
        self._local: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # A lock's value names its holder: this isolation (random, so unique across processes)
        # and a counter (unique within it). Cheaper than a uuid4 per lock.
        self._owner = uuid.uuid4().hex
        self._tokens = itertools.count()
        # Releases interrupted by cancellation, finishing in the background (strong references).
        self._background: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def lock(self, key: StorageKey) -> AsyncGenerator[None, None]:
        """Hold the lock of ``key`` while the body runs."""
        name = self.key_builder.build(key, "lock")
        local = self._local.get(name)
        if local is None:
            local = self._local[name] = asyncio.Lock()
        async with local:
            token, deadline = await self._acquire(name)
            try:
                yield
            finally:
                # A plain await: shielding every release would cost a Task per update. Only if
                # the release itself is cancelled is it finished in the background (checking the
                # token, since by then the lock may have expired and changed hands).
                try:
                    await self._release(name, token, deadline)
                except asyncio.CancelledError:
                    task = asyncio.get_running_loop().create_task(self._release(name, token, 0.0))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
                    raise

    async def _acquire(self, name: str) -> tuple[str, float]:
        token = f"{self._owner}:{next(self._tokens)}"
        delay = self.poll_interval
        add = self.storage.add
        while True:
            # Measured before the request: the backend's expiry starts later than this, so the
            # lock is surely still ours until ``deadline``.
            started = time.monotonic()
            if await add(name, token, ttl=self.ttl):
                return token, started + self.ttl * 0.9
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter
            delay = min(delay * 2, self.max_poll_interval)

    async def _release(self, name: str, token: str, deadline: float) -> None:
        storage = self.storage
        # Before the deadline the lock is surely ours: one round trip. After it, the lock may
        # have expired and been taken by someone else, so delete it only if it is still ours
        # (a check-then-delete race remains, and only for a handler that outlived ``ttl``).
        if time.monotonic() < deadline or await storage.get(name) == token:
            await storage.delete(name)

    async def close(self) -> None:
        """Nothing to release: locks live in the storage and vanish on their own."""
        return None

    def __repr__(self) -> str:
        return f"StorageEventIsolation({self.storage!r}, ttl={self.ttl:g})"


SessionKey = Callable[["TelegramObject", dict[str, Any]], "str | int | None"]


def sender_id(event: TelegramObject, data: dict[str, Any]) -> int | None:
    """The default session id: the sender's user id (GramIO's ``senderId``), if any."""
    user = data.get("event_from_user")
    return None if user is None else user.id


class SessionMiddleware(BaseMiddleware):
    """Puts a :class:`~gramio_storage.session.Session` into handler data and saves it after.

    Register it as an outer middleware on updates, after the dispatcher is created, so it runs
    inside aiogram's event isolation lock (the session is read and written under the lock)::

        dp.update.outer_middleware(SessionMiddleware(storage, initial=lambda: {"count": 0}))

        @router.message(Command("count"))
        async def count(message: Message, session: Session[dict]) -> None:
            session.data["count"] += 1

    The session is saved once, after the handlers, only if it changed; if a handler raises,
    nothing is saved. Updates without a sender (channel posts...) get ``session=None``.

    Args:
        storage: A backend, or a ready :class:`~gramio_storage.session.SessionManager` (then
            the other options must be left out).
        initial: Factory for a new session (``dict`` by default).
        key: ``(event, data) -> id`` picking whose session this is; the sender's id by
            default. Return ``None`` for "no session".
        name: The handler argument receiving the session.
        namespace: Key prefix; ``""`` for GramIO's bare ``"<senderId>"`` keys.
        type: Decode stored sessions into this type.
        ttl: Session expiry; see :class:`~gramio_storage.session.SessionManager`.
        sliding: Renew the expiry on every update that reads the session.
        lazy: Read the session only when a handler awaits ``session.load()``.
    """

    def __init__(
        self,
        storage: BaseStorage | SessionManager[Any],
        *,
        initial: Callable[[], Any] | None = None,
        key: SessionKey = sender_id,
        name: str = "session",
        namespace: str | None = None,
        type: Any = None,
        ttl: TTL | None = None,
        sliding: bool | None = None,
        lazy: bool | None = None,
    ) -> None:
        if isinstance(storage, SessionManager):
            given = [
                n
                for n, v in (
                    ("initial", initial),
                    ("namespace", namespace),
                    ("type", type),
                    ("ttl", ttl),
                    ("sliding", sliding),
                    ("lazy", lazy),
                )
                if v is not None
            ]
            if given:
                raise TypeError(
                    f"Pass {', '.join(given)} to the SessionManager, not to SessionMiddleware"
                )
            self.manager: SessionManager[Any] = storage
        else:
            self.manager = SessionManager(
                storage,
                initial=dict if initial is None else initial,
                namespace="session:" if namespace is None else namespace,
                type=Any if type is None else type,
                ttl=ttl,
                sliding=bool(sliding),
                lazy=bool(lazy),
            )
        self.key = key
        self.name = name

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        """Load the session, run the handlers, save the session if they succeeded."""
        session_id = self.key(event, data)
        if session_id is None:
            data[self.name] = None
            return await handler(event, data)
        manager = self.manager
        session: Session[Any] = manager.session(session_id)
        if not manager.lazy:
            await session.load()
        data[self.name] = session
        result = await handler(event, data)
        await session.save()  # not reached when a handler raised: no half-updated session
        return result
