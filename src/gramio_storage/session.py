"""Per-user sessions over any storage, with GramIO's session-plugin semantics.

Framework-agnostic: the aiogram middleware (:mod:`gramio_storage.aiogram`) is built on it, and
any other framework needs three calls per update (open, mutate, save)::

    from gramio_storage.session import SessionManager

    sessions = SessionManager(storage, initial=lambda: {"count": 0})

    async with sessions.open(user_id) as session:   # loads; saves on a clean exit
        session.data["count"] += 1

What it guarantees, as GramIO's ``@gramio/session`` does and a little more:

* the ``initial`` factory gives a new user's session; it is **not written** until it changes;
* at most **one write per update**, and only when the session changed: the value is encoded and
  compared with what was loaded, so nested mutations (``data["cart"].append(x)``) count;
* replacing the whole object (``session.data = {...}``) is saved too (GramIO's plugin loses it);
* :meth:`Session.clear` deletes the stored session at once;
* lazy loading (``lazy=True``): nothing is read until the handler awaits :meth:`Session.load`;
* an optional TTL, sliding (renewed on every update that reads the session) if asked.

Keys are ``namespace + str(id)`` with ``namespace="session:"`` by default; ``namespace=""`` gives
GramIO's bare ``"<senderId>"`` keys, to share sessions with a GramIO bot on the same database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

from ._codecs import JSON, Codec
from ._errors import EncodeError
from ._keys import Key
from ._protocol import TTL, Storage
from ._storage import BaseStorage
from ._validate import ttl_seconds

__all__ = ["Session", "SessionManager"]

T = TypeVar("T")

_UNSET: Any = object()


class SessionManager(Generic[T]):
    """Makes :class:`Session` objects for one kind of session (one namespace, one shape).

    Args:
        storage: Any storage: a built-in backend, a view, or an object with the four methods.
        initial: Factory for a session that does not exist yet (called once per new session,
            so a mutable default is never shared). Defaults to ``dict``.
        namespace: Prepended to every session id to make the key. ``""`` gives GramIO's bare
            ``"<senderId>"`` keys.
        type: Decode stored sessions into this type (a dataclass, ``msgspec.Struct``,
            ``TypedDict``, pydantic model...). ``Any`` (the default) returns plain JSON values.
        ttl: Expire a session this long after it was last written. ``None``: the storage's
            default TTL (usually never).
        sliding: With ``ttl``, also renew the expiry of an unchanged session each time an
            update reads it, so sessions expire after ``ttl`` of *inactivity*. Costs one write
            per update for users with a session.
        lazy: Default for :meth:`open`: when True the session is read only when the handler
            awaits :meth:`Session.load`.

    Raises:
        InvalidTTLError: ``ttl`` is not a positive duration (or is below the backend minimum).
    """

    __slots__ = (
        "_compare",
        "_initial",
        "_key_type",
        "lazy",
        "namespace",
        "sliding",
        "storage",
        "ttl",
    )

    def __init__(
        self,
        storage: Storage,
        *,
        initial: Callable[[], T] = dict,  # type: ignore[assignment]
        namespace: str = "session:",
        type: Any = Any,
        ttl: TTL | None = None,
        sliding: bool = False,
        lazy: bool = False,
    ) -> None:
        if not callable(initial):
            raise TypeError(f"initial must be a factory (a callable), got {initial!r}")
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, got {namespace.__class__.__qualname__}")
        if isinstance(storage, BaseStorage) and ttl is not None:
            # Reject a bad TTL now, not at the first save.
            ttl_seconds(ttl, storage.capabilities, "ttl")
        self.storage = storage
        self._initial = initial
        self.namespace = namespace
        self._key_type = type
        self.ttl = ttl
        self.sliding = sliding and ttl is not None
        self.lazy = lazy
        self._compare = _comparison_codec(storage)

    def key(self, session_id: str | int) -> str | Key[T]:
        """The storage key of the session ``session_id`` (``namespace + str(session_id)``)."""
        name = self.namespace + str(session_id)
        return name if self._key_type is Any else Key(name, self._key_type)

    def session(self, session_id: str | int) -> Session[T]:
        """A session handle for ``session_id``; nothing is read until :meth:`Session.load`."""
        return Session(self, self.key(session_id))

    @asynccontextmanager
    async def open(
        self, session_id: str | int, *, lazy: bool | None = None
    ) -> AsyncIterator[Session[T]]:
        """Open the session for one update: load it (unless lazy), save it on a clean exit.

        If the body raises, nothing is saved: a half-updated session never reaches storage.

        Args:
            session_id: Whose session (usually the sender's id).
            lazy: Override the manager's ``lazy`` for this update.
        """
        session = Session(self, self.key(session_id))
        if not (self.lazy if lazy is None else lazy):
            await session.load()
        yield session
        await session.save()

    def __repr__(self) -> str:
        return (
            f"SessionManager({self.storage!r}, namespace={self.namespace!r}"
            f"{'' if self.ttl is None else f', ttl={self.ttl!r}'}"
            f"{', sliding=True' if self.sliding else ''}{', lazy=True' if self.lazy else ''})"
        )


class Session(Generic[T]):
    """One user's session during one update. Made by :class:`SessionManager`.

    Read and mutate :attr:`data` after :meth:`load` (done for you unless lazy); assign to
    :attr:`data` to replace the whole session; call :meth:`save` once at the end of the update
    (the integrations and :meth:`SessionManager.open` do).
    """

    __slots__ = ("_baseline", "_data", "_existed", "_loaded", "_manager", "key")

    def __init__(self, manager: SessionManager[T], key: str | Key[T]) -> None:
        self._manager = manager
        self.key = key
        self._data: T = _UNSET
        self._loaded = False
        # Encoded form of what storage holds (or of the fresh initial value, for a new session);
        # ``None`` when unknown, which makes the next save write unconditionally.
        self._baseline: bytes | None = None
        self._existed = False

    @property
    def loaded(self) -> bool:
        """Whether the session was read (or assigned) during this update."""
        return self._loaded

    @property
    def exists(self) -> bool:
        """Whether the session is stored (as of the last load, save or clear)."""
        return self._existed

    @property
    def data(self) -> T:
        """The session value; mutate it in place or assign a new one.

        Raises:
            RuntimeError: The session is lazy and :meth:`load` was not awaited yet.
        """
        if not self._loaded:
            raise RuntimeError(
                f"Session {_name(self.key)!r} is not loaded: await session.load() first "
                "(the session manager is lazy)"
            )
        return self._data

    @data.setter
    def data(self, value: T) -> None:
        if not self._loaded:
            # Replaced without reading: what storage holds is unknown, so save must write.
            self._loaded = True
            self._baseline = None
        self._data = value

    async def load(self) -> T:
        """Read the session (once per update) and return its value.

        A missing session is the ``initial`` value, kept in memory only until it changes.

        Raises:
            DecodeError: The stored session does not decode into the manager's ``type``.
        """
        if self._loaded:
            return self._data
        manager = self._manager
        value = await manager.storage.get(self.key, _UNSET)
        if value is _UNSET:
            value = manager._initial()
            self._existed = False
        else:
            self._existed = True
        self._baseline = self._encode(value)
        self._data = value
        self._loaded = True
        return value

    @property
    def changed(self) -> bool:
        """Whether the session differs from what storage holds (encodes it to compare)."""
        return self._loaded and self._encode(self._data) != self._baseline

    async def save(self) -> bool:
        """Write the session if it changed (or to renew a sliding TTL). Return whether it wrote.

        A session that was never loaded, or loaded and left unchanged, costs nothing.

        Raises:
            EncodeError: The session holds a value the codec cannot encode; nothing was written.
        """
        if not self._loaded:
            return False
        manager = self._manager
        encoded = self._encode(self._data)
        if encoded == self._baseline and not (manager.sliding and self._existed):
            return False
        await manager.storage.set(self.key, self._data, ttl=manager.ttl)
        self._baseline = encoded
        self._existed = True
        return True

    async def clear(self) -> None:
        """Delete the stored session now and start over from ``initial`` (not written)."""
        manager = self._manager
        await manager.storage.delete(self.key)
        value = manager._initial()
        self._baseline = self._encode(value)
        self._data = value
        self._existed = False
        self._loaded = True

    def _encode(self, value: Any) -> bytes:
        try:
            return self._manager._compare.encode(value)
        except Exception as e:
            name = _name(self.key)
            raise EncodeError(
                f"Cannot encode the session {name!r} ({value.__class__.__qualname__}): {e}",
                key=name,
                backend=getattr(self._manager.storage, "backend_name", None),
            ) from e

    def __repr__(self) -> str:
        state = repr(self._data) if self._loaded else "<not loaded>"
        return f"Session({_name(self.key)!r}, {state})"


def _comparison_codec(storage: object) -> Codec:
    """The codec whose bytes decide "changed": the storage's own when it produces bytes.

    A storage that keeps references (``MemoryStorage(codec=None)``, whose codec declares
    ``stores_references``) or an object without a codec is compared through JSON instead, so
    in-place mutations are still detected.
    """
    codec = getattr(storage, "codec", None)
    if codec is None or getattr(codec, "stores_references", False):
        return JSON
    return codec  # type: ignore[no-any-return]


def _name(key: str | Key[Any]) -> str:
    return key if isinstance(key, str) else key.name
