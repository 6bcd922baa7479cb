"""python-telegram-bot integration: a persistence over any gramio-storage backend.

::

    from telegram.ext import Application
    from gramio_storage import storage_from_url
    from gramio_storage.telegram import StoragePersistence

    storage = storage_from_url("sqlite:///bot.db")
    app = Application.builder().token(TOKEN).persistence(StoragePersistence(storage)).build()

Unlike ``PicklePersistence`` nothing is pickled and nothing is rewritten wholesale: every user,
chat and conversation entry is its own JSON value (``ptb:user:<id>``, ``ptb:chat:<id>``,
``ptb:bot``, ``ptb:callback_data``, ``ptb:conv:<name>:<key>``), written only when it changed.
Several applications (processes, machines) can share one backend: before each handler the
entries it uses are refreshed from storage, unless this process has changes of its own that
are not written yet.

Install with ``pip install 'gramio-storage[telegram]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._codecs import JSON, Codec
from ._errors import DecodeError, EncodeError, MissingDependencyError
from ._storage import BaseStorage
from .session import _comparison_codec

try:
    from telegram.ext import BasePersistence, PersistenceInput
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "gramio_storage.telegram needs python-telegram-bot. "
        "Install it with: pip install 'gramio-storage[telegram]'"
    ) from e

if TYPE_CHECKING:
    from telegram.ext._utils.types import CDCData, ConversationDict, ConversationKey

__all__ = ["StoragePersistence"]

_BATCH = 500
_Data = dict[Any, Any]


class StoragePersistence(BasePersistence[_Data, _Data, _Data]):
    """A python-telegram-bot ``BasePersistence`` storing everything in a gramio-storage backend.

    Stores ``user_data``, ``chat_data``, ``bot_data``, callback data and the states of
    persistent conversation handlers, each entry under its own key, as JSON (through the
    storage's codec): values must be JSON-like (``dict`` keys become strings, tuples lists).
    Conversation keys (tuples of ids) are encoded as JSON arrays, so ``(123, 456)`` is stored
    under ``ptb:conv:<name>:[123,456]``.

    Sharing one backend between applications: ``user_data``, ``chat_data`` and ``bot_data`` are
    re-read before each handler (``refresh_*``) unless this process changed them and has not
    flushed yet; PTB flushes every ``update_interval`` seconds, so keep it short when several
    processes serve the same users (last writer wins per entry, never per file). Conversation
    states are read when the application starts: two processes must not serve the same
    conversation at the same time.

    Args:
        storage: The backend (or a view). Not closed by the persistence: close it yourself
            after ``Application.shutdown()``.
        namespace: Prefix of every key.
        store_data: Which kinds of data to store (PTB's ``PersistenceInput``); all by default.
        update_interval: Seconds between PTB's flushes of changed data. 1 by default (PTB's
            own default is 60): a flush writes only what changed, so it is cheap.
        preload: Read every stored ``user_data``/``chat_data`` at start-up, as PTB expects
            (``application.user_data`` then lists all users). ``False`` loads each entry when
            its user or chat next sends an update, for bots with very many users.
    """

    def __init__(
        self,
        storage: BaseStorage,
        *,
        namespace: str = "ptb:",
        store_data: PersistenceInput | None = None,
        update_interval: float = 1,
        preload: bool = True,
    ) -> None:
        if not isinstance(storage, BaseStorage):
            raise TypeError(
                "StoragePersistence needs a gramio-storage backend (a BaseStorage), "
                f"got {storage.__class__.__qualname__}"
            )
        super().__init__(store_data=store_data, update_interval=update_interval)
        self.storage = storage
        self._view = storage.with_prefix(namespace)
        self.namespace = namespace
        self.preload = preload
        self._compare: Codec = _comparison_codec(storage)
        self._empty = self._compare.encode({})
        # Encoded form of each entry as last read from or written to storage: "unchanged"
        # means equal bytes, so nested mutations count and unchanged data costs no write.
        self._synced: dict[str, bytes] = {}

    # ------------------------------------------------------------------ loading

    async def get_user_data(self) -> dict[int, _Data]:
        """Every stored ``user_data`` (or none when ``preload=False``)."""
        return await self._load_all("user:") if self.preload else {}

    async def get_chat_data(self) -> dict[int, _Data]:
        """Every stored ``chat_data`` (or none when ``preload=False``)."""
        return await self._load_all("chat:") if self.preload else {}

    async def get_bot_data(self) -> _Data:
        """The stored ``bot_data``, or ``{}``."""
        value = await self._view.get("bot")
        if value is None:
            return {}
        self._check_dict("bot", value)
        self._synced["bot"] = self._compare.encode(value)
        return value  # type: ignore[no-any-return]

    async def get_callback_data(self) -> CDCData | None:
        """The stored callback-data cache, with its tuples restored."""
        value = await self._view.get("callback_data")
        if value is None:
            return None
        self._synced["callback_data"] = self._compare.encode(value)
        try:
            entries, mapping = value
            return [(str(u), float(t), dict(d)) for u, t, d in entries], dict(mapping)
        except (TypeError, ValueError) as e:
            raise DecodeError(
                "The stored callback data is not [[uuid, time, data], ...], {...}]",
                key=self.namespace + "callback_data",
                backend=self.storage.backend_name,
            ) from e

    async def get_conversations(self, name: str) -> ConversationDict:
        """The stored states of the conversation handler ``name``."""
        prefix = f"conv:{name}:"
        names = [k async for k in self._view.keys(prefix)]
        states: ConversationDict = {}
        for i in range(0, len(names), _BATCH):
            found = await self._view.get_many(names[i : i + _BATCH])
            for k, state in found.items():
                key = _decode_conversation_key(k[len(prefix) :])
                if key is not None:  # else another handler's, whose name extends this one
                    states[key] = state
        return states

    async def _load_all(self, kind: str) -> dict[int, _Data]:
        names = [k async for k in self._view.keys(kind)]
        out: dict[int, _Data] = {}
        encode = self._compare.encode
        for i in range(0, len(names), _BATCH):
            found = await self._view.get_many(names[i : i + _BATCH])
            for k, value in found.items():
                try:
                    entity_id = int(k[len(kind) :])
                except ValueError:
                    continue  # not ours (a key someone else put under this prefix)
                self._check_dict(k, value)
                out[entity_id] = value
                self._synced[k] = encode(value)
        return out

    # ------------------------------------------------------------------ refreshing

    async def refresh_user_data(self, user_id: int, user_data: _Data) -> None:
        """Bring ``user_data`` up to date with storage (in place), unless it has local changes."""
        await self._refresh(f"user:{user_id}", user_data)

    async def refresh_chat_data(self, chat_id: int, chat_data: _Data) -> None:
        """Bring ``chat_data`` up to date with storage (in place), unless it has local changes."""
        await self._refresh(f"chat:{chat_id}", chat_data)

    async def refresh_bot_data(self, bot_data: _Data) -> None:
        """Bring ``bot_data`` up to date with storage (in place), unless it has local changes."""
        await self._refresh("bot", bot_data)

    async def _refresh(self, name: str, local: _Data) -> None:
        encode = self._encode
        if encode(name, local) != self._synced.get(name, self._empty):
            return  # changed here and not flushed yet: ours is newer, PTB will write it
        value = await self._view.get(name)
        if value is None:
            value = {}
        else:
            self._check_dict(name, value)
        encoded = encode(name, value)
        if encoded != self._synced.get(name, self._empty):  # another process wrote it
            local.clear()
            local.update(value)
        self._synced[name] = encoded

    # ------------------------------------------------------------------ writing

    async def update_user_data(self, user_id: int, data: _Data) -> None:
        """Write ``user_data`` of one user if it changed (an empty dict deletes the entry)."""
        await self._write(f"user:{user_id}", data)

    async def update_chat_data(self, chat_id: int, data: _Data) -> None:
        """Write ``chat_data`` of one chat if it changed (an empty dict deletes the entry)."""
        await self._write(f"chat:{chat_id}", data)

    async def update_bot_data(self, data: _Data) -> None:
        """Write ``bot_data`` if it changed."""
        await self._write("bot", data)

    async def update_callback_data(self, data: CDCData) -> None:
        """Write the callback-data cache if it changed."""
        await self._write("callback_data", data, delete_empty=False)

    async def _write(self, name: str, data: Any, *, delete_empty: bool = True) -> None:
        encoded = self._encode(name, data)
        if encoded == self._synced.get(name, self._empty):
            return
        if delete_empty and encoded == self._empty:
            await self._view.delete(name)
        else:
            await self._view.set(name, data)
        self._synced[name] = encoded

    async def update_conversation(
        self, name: str, key: ConversationKey, new_state: object | None
    ) -> None:
        """Store a conversation's new state; ``None`` (the conversation ended) deletes it."""
        entry = f"conv:{name}:{_encode_conversation_key(key)}"
        if new_state is None:
            await self._view.delete(entry)
        else:
            await self._view.set(entry, new_state)

    async def drop_user_data(self, user_id: int) -> None:
        """Delete one user's ``user_data``."""
        await self._drop(f"user:{user_id}")

    async def drop_chat_data(self, chat_id: int) -> None:
        """Delete one chat's ``chat_data``."""
        await self._drop(f"chat:{chat_id}")

    async def _drop(self, name: str) -> None:
        await self._view.delete(name)
        self._synced.pop(name, None)

    async def flush(self) -> None:
        """Nothing is buffered here: every change was written when PTB handed it over."""
        return None

    # ------------------------------------------------------------------ helpers

    def _encode(self, name: str, value: object) -> bytes:
        try:
            return self._compare.encode(value)
        except Exception as e:
            raise EncodeError(
                f"Cannot encode the value for {self.namespace + name!r} "
                f"({value.__class__.__qualname__}): {e}. Persisted data must be JSON-like.",
                key=self.namespace + name,
                backend=self.storage.backend_name,
            ) from e

    def _check_dict(self, name: str, value: object) -> None:
        if not isinstance(value, dict):
            raise DecodeError(
                f"The value under {self.namespace + name!r} is a "
                f"{value.__class__.__qualname__}, not a dict",
                key=self.namespace + name,
                backend=self.storage.backend_name,
            )

    def __repr__(self) -> str:
        return f"StoragePersistence({self.storage!r}, namespace={self.namespace!r})"


def _encode_conversation_key(key: ConversationKey) -> str:
    """A conversation key as compact JSON: deterministic, and ids of any kind stay apart."""
    return JSON.encode(list(key)).decode()


def _decode_conversation_key(text: str) -> ConversationKey | None:
    if not text.startswith("["):
        return None
    try:
        items = JSON.decode(text.encode())
    except Exception:
        return None
    if not isinstance(items, list) or not all(
        isinstance(i, (int, str)) and not isinstance(i, bool) for i in items
    ):
        return None
    return tuple(items)
