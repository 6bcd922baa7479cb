"""python-telegram-bot runs on gramio-storage through StoragePersistence.

The real ``Application`` processes real ``Update`` objects (``Application.process_update``); the
only stand-in is its HTTP layer, a ``BaseRequest`` that records calls and answers with canned
Bot API JSON (no network). Every scenario runs on every backend available in the suite.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from telegram import Update
from telegram.ext import (
    Application,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    PersistenceInput,
    filters,
)

from _bot_backends import *  # noqa: F403  (the `backend` fixture and server fixtures)
from _bot_backends import BotBackend
from _ptb_offline import RecordingRequest, message
from gramio_storage import BaseStorage, DecodeError, EncodeError, MemoryStorage
from gramio_storage.telegram import StoragePersistence

# ------------------------------------------------------------------ the bot under test

NAME, AGE = range(2)


async def count(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None and context.user_data is not None
    context.user_data["count"] = context.user_data.get("count", 0) + 1
    context.bot_data["visits"] = context.bot_data.get("visits", 0) + 1
    await update.effective_message.reply_text(f"count={context.user_data['count']}")


async def note(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None and context.chat_data is not None
    assert update.effective_message.text is not None
    context.chat_data.setdefault("notes", []).append(update.effective_message.text.split()[1])


async def register(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    assert update.effective_message is not None
    await update.effective_message.reply_text("name?")
    return NAME


async def got_name(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    assert update.effective_message is not None and context.user_data is not None
    context.user_data["name"] = update.effective_message.text
    await update.effective_message.reply_text("age?")
    return AGE


async def got_age(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int | None:
    msg = update.effective_message
    assert msg is not None and msg.text is not None and context.user_data is not None
    if not msg.text.isdigit():
        await msg.reply_text("age must be a number")
        return None  # stay in AGE
    context.user_data["age"] = int(msg.text)
    await msg.reply_text(f"registered {context.user_data['name']}, {msg.text}")
    return ConversationHandler.END


class App:
    """One bot process: a StoragePersistence over its own storage object, and an Application."""

    def __init__(self, storage: BaseStorage, **options: Any) -> None:
        self.storage = storage
        self.persistence = StoragePersistence(storage, **options)
        self.request = RecordingRequest()
        self.app = (
            Application.builder()
            .token("123:abc")
            .request(self.request)
            .get_updates_request(RecordingRequest())
            .persistence(self.persistence)
            .build()
        )
        text = filters.TEXT & ~filters.COMMAND
        self.app.add_handler(
            ConversationHandler(
                entry_points=[CommandHandler("register", register)],
                states={
                    NAME: [MessageHandler(text, got_name)],
                    AGE: [MessageHandler(text, got_age)],
                },
                fallbacks=[],
                name="reg",
                persistent=True,
            )
        )
        self.app.add_handler(CommandHandler("count", count))
        self.app.add_handler(CommandHandler("note", note))

    async def __aenter__(self) -> App:
        await self.app.initialize()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.app.shutdown()  # flushes through the persistence

    async def send(self, user_id: int, text: str) -> list[str]:
        before = len(self.request.texts())
        await self.app.process_update(message(self.app, user_id, text))
        return self.request.texts()[before:]

    async def flush(self) -> None:
        await self.app.update_persistence()


# ------------------------------------------------------------------ scenarios


async def test_a_conversation_and_user_data_are_stored_as_json(backend: BotBackend) -> None:
    storage = await backend.open()
    async with App(storage) as bot:
        assert await bot.send(1, "/count") == ["count=1"]
        assert await bot.send(1, "/register") == ["name?"]
        assert await bot.send(1, "Alice") == ["age?"]
        await bot.flush()
        assert await storage.get("ptb:conv:reg:[1,1]") == AGE  # (chat, user) as a JSON array
        assert await storage.get("ptb:user:1") == {"count": 1, "name": "Alice"}
        assert await bot.send(1, "thirty") == ["age must be a number"]
        assert await bot.send(1, "30") == ["registered Alice, 30"]
        assert await bot.send(1, "/note hello") == []
        await bot.flush()
        assert not await storage.has("ptb:conv:reg:[1,1]")  # ended: deleted
        assert await storage.get("ptb:user:1") == {"count": 1, "name": "Alice", "age": 30}
        assert await storage.get("ptb:chat:1") == {"notes": ["hello"]}
        assert await storage.get("ptb:bot") == {"visits": 1}


async def test_a_restarted_application_continues_the_conversation(backend: BotBackend) -> None:
    async with App(await backend.open()) as first:
        assert await first.send(7, "/count") == ["count=1"]
        assert await first.send(7, "/register") == ["name?"]
        assert await first.send(7, "Bob") == ["age?"]
    # shutdown() flushed; a new process with its own storage client starts over the same data
    async with App(await backend.open()) as second:
        assert second.app.user_data[7] == {"count": 1, "name": "Bob"}
        assert await second.send(7, "41") == ["registered Bob, 41"]
        assert await second.send(7, "/count") == ["count=2"]


async def test_applications_sharing_a_backend_see_each_others_data(backend: BotBackend) -> None:
    async with App(await backend.open()) as a, App(await backend.open()) as b:
        assert await a.send(1, "/count") == ["count=1"]
        await a.flush()
        assert await b.send(1, "/count") == ["count=2"]  # refreshed from storage first
        assert await b.send(2, "/count") == ["count=1"]
        await b.flush()
        assert await a.send(1, "/count") == ["count=3"]
        await a.flush()  # writes user 1 only: user 2's entry, written by b, is left alone
        storage = a.storage
        assert await storage.get("ptb:user:1") == {"count": 3}
        assert await storage.get("ptb:user:2") == {"count": 1}
        assert await storage.get("ptb:bot") == {"visits": 4}
        await b.flush()  # b's bot_data is stale but unchanged by b: it must not be written back
        assert await storage.get("ptb:bot") == {"visits": 4}


async def test_concurrent_updates_of_one_user_count_every_update(backend: BotBackend) -> None:
    async with App(await backend.open()) as bot:
        await asyncio.gather(
            *(bot.app.process_update(message(bot.app, 5, "/count")) for _ in range(10))
        )
        assert bot.app.user_data[5] == {"count": 10}
        await bot.flush()
        assert await bot.storage.get("ptb:user:5") == {"count": 10}


async def test_a_refresh_never_drops_changes_not_flushed_yet(backend: BotBackend) -> None:
    """A handler's write survives until the flush even if another process wrote the entry."""
    async with App(await backend.open()) as a, App(await backend.open()) as b:
        assert await a.send(1, "/register") == ["name?"]
        assert await a.send(1, "Alice") == ["age?"]  # user_data["name"], not flushed yet
        assert await b.send(1, "/count") == ["count=1"]
        await b.flush()  # storage now holds b's version of user 1, without "name"
        assert await a.send(1, "30") == ["registered Alice, 30"]  # got_age reads the name
        await a.flush()  # last writer wins, per entry
        assert await a.storage.get("ptb:user:1") == {"name": "Alice", "age": 30}


async def test_dropped_user_and_chat_data_are_deleted(backend: BotBackend) -> None:
    async with App(await backend.open()) as bot:
        await bot.send(3, "/count")
        await bot.send(3, "/note x")
        await bot.flush()
        assert await bot.storage.has("ptb:user:3")
        bot.app.drop_user_data(3)
        bot.app.drop_chat_data(3)
        await bot.flush()
        assert not await bot.storage.has("ptb:user:3")
        assert not await bot.storage.has("ptb:chat:3")


async def test_without_preload_entries_load_when_their_user_writes(backend: BotBackend) -> None:
    async with App(await backend.open()) as first:
        await first.send(4, "/count")
    async with App(await backend.open(), preload=False) as second:
        assert 4 not in second.app.user_data
        assert await second.send(4, "/count") == ["count=2"]


async def test_callback_data_round_trips_with_its_tuples(backend: BotBackend) -> None:
    persistence = StoragePersistence(await backend.open())
    assert await persistence.get_callback_data() is None
    data = ([("uuid-1", 1700000000.5, {"button": "yes"})], {"cb-1": "uuid-1"})
    await persistence.update_callback_data(data)
    again = StoragePersistence(await backend.open())
    assert await again.get_callback_data() == data


async def test_conversation_keys_of_every_shape_round_trip(backend: BotBackend) -> None:
    persistence = StoragePersistence(await backend.open())
    await persistence.update_conversation("a", (1, 2), 0)
    await persistence.update_conversation("a", (-100123, 5, "inline:msg"), "STEP")
    await persistence.update_conversation("a:b", (1, 2), 1)  # a name extending another one
    fresh = StoragePersistence(await backend.open())
    assert await fresh.get_conversations("a") == {(1, 2): 0, (-100123, 5, "inline:msg"): "STEP"}
    assert await fresh.get_conversations("a:b") == {(1, 2): 1}
    await fresh.update_conversation("a", (1, 2), None)
    assert await fresh.get_conversations("a") == {(-100123, 5, "inline:msg"): "STEP"}


async def test_an_unencodable_value_is_reported_and_the_stored_entry_kept() -> None:
    storage = MemoryStorage()
    errors: list[BaseException] = []

    async def remember(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert context.error is not None
        errors.append(context.error)

    async def store_object(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert context.user_data is not None
        context.user_data["bad"] = object()  # not JSON

    async with App(storage) as bot:
        bot.app.add_handler(CommandHandler("bad", store_object))
        bot.app.add_error_handler(remember)
        await bot.send(1, "/count")
        await bot.flush()
        await bot.send(1, "/bad")
        await bot.flush()
        assert [type(e) for e in errors] == [EncodeError]
        assert errors[0].key == "ptb:user:1"  # type: ignore[attr-defined]
        assert await storage.get("ptb:user:1") == {"count": 1}
        del bot.app.user_data[1]["bad"]  # let shutdown flush cleanly


async def test_store_data_limits_what_is_stored() -> None:
    storage = MemoryStorage()
    only_users = PersistenceInput(chat_data=False, bot_data=False, callback_data=False)
    async with App(storage, store_data=only_users) as bot:
        await bot.send(1, "/count")
        await bot.send(1, "/note x")
        await bot.flush()
    assert sorted([k async for k in storage.keys()]) == ["ptb:user:1"]


async def test_a_namespace_scopes_the_keys() -> None:
    storage = MemoryStorage()
    async with App(storage, namespace="bot1:") as bot:
        await bot.send(1, "/count")
    assert sorted([k async for k in storage.keys()]) == ["bot1:bot", "bot1:user:1"]


async def test_a_non_dict_entry_is_a_decode_error_naming_the_key() -> None:
    storage = MemoryStorage()
    await storage.set("ptb:user:9", [1, 2])
    persistence = StoragePersistence(storage)
    with pytest.raises(DecodeError, match="ptb:user:9") as info:
        await persistence.get_user_data()
    assert info.value.key == "ptb:user:9"
    await storage.set("ptb:callback_data", {"not": "a pair"})
    with pytest.raises(DecodeError, match="callback"):
        await persistence.get_callback_data()


async def test_foreign_keys_under_the_namespace_are_ignored() -> None:
    storage = MemoryStorage()
    await storage.set("ptb:user:not-a-number", {"x": 1})
    await storage.set("ptb:conv:reg:garbage", 1)
    persistence = StoragePersistence(storage)
    assert await persistence.get_user_data() == {}
    assert await persistence.get_conversations("reg") == {}


def test_only_gramio_storages_are_accepted() -> None:
    with pytest.raises(TypeError, match="gramio-storage backend"):
        StoragePersistence({})  # type: ignore[arg-type]
    persistence = StoragePersistence(MemoryStorage(), update_interval=5)
    assert persistence.update_interval == 5
    assert repr(persistence) == "StoragePersistence(MemoryStorage(), namespace='ptb:')"
