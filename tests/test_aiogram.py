"""aiogram runs on gramio-storage: FSM storage, event isolation, session middleware, the demo.

The real aiogram Dispatcher processes real Update objects (``Dispatcher.feed_update``); the only
stand-in is the Bot's HTTP session, which records API calls instead of sending them (no network).
Every flow runs on every backend available in the suite.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, TypedDict

import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.base import BaseSession
from aiogram.exceptions import DataNotDictLikeError
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.base import BaseEventIsolation, DefaultKeyBuilder, StorageKey
from aiogram.fsm.storage.memory import DisabledEventIsolation
from aiogram.methods import TelegramMethod
from aiogram.types import Chat, Message, Update

from _bot_backends import *  # noqa: F403  (the `backend` fixture and server fixtures)
from _bot_backends import BotBackend
from gramio_storage import (
    BaseStorage,
    DecodeError,
    InvalidTTLError,
    MemoryStorage,
    UnsupportedOperationError,
)
from gramio_storage.aiogram import AiogramStorage, SessionMiddleware, StorageEventIsolation
from gramio_storage.session import Session, SessionManager

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "42:TEST-TOKEN"
KEY = StorageKey(chat_id=-42, user_id=42, bot_id=42)


# ------------------------------------------------------------------ an offline Bot


class RecordingSession(BaseSession):
    """A Bot API session that records each call and answers like Telegram, without a network."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._ids = itertools.count(1000)

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[Any],
        timeout: int | None = None,  # noqa: ASYNC109
    ) -> Any:
        params = method.model_dump(exclude_none=True)
        self.calls.append((type(method).__name__, params))
        returning = method.__returning__
        if returning is Message:
            return Message.model_validate(
                {
                    "message_id": next(self._ids),
                    "date": datetime.datetime.now(datetime.UTC),
                    "chat": {"id": params["chat_id"], "type": "private"},
                    "text": params.get("text"),
                },
                context={"bot": bot},
            )
        if returning is bool:
            return True
        raise AssertionError(f"the test bot does not fake {type(method).__name__}")

    async def stream_content(self, *args: Any, **kwargs: Any) -> AsyncGenerator[bytes, None]:
        raise AssertionError("no downloads in these tests")
        yield b""  # pragma: no cover

    async def close(self) -> None:
        return None

    def texts(self, chat_id: int | None = None) -> list[str]:
        return [
            p["text"]
            for name, p in self.calls
            if name == "SendMessage" and (chat_id is None or p["chat_id"] == chat_id)
        ]


_update_ids = itertools.count(1)


def message_update(bot: Bot, user_id: int, text: str) -> Update:
    n = next(_update_ids)
    return Update.model_validate(
        {
            "update_id": n,
            "message": {
                "message_id": n,
                "date": datetime.datetime.now(datetime.UTC),
                "chat": {"id": user_id, "type": "private"},
                "from": {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"},
                "text": text,
            },
        },
        context={"bot": bot},
    )


# ------------------------------------------------------------------ the bot under test


class Form(StatesGroup):
    name = State()
    age = State()


def make_router() -> Router:
    router = Router()

    @router.message(Command("count"))
    async def count(message: Message, session: Session[dict[str, Any]]) -> None:
        session.data["count"] += 1
        await message.answer(f"count={session.data['count']}")

    @router.message(Command("register"))
    async def register(message: Message, state: FSMContext) -> None:
        await state.set_state(Form.name)
        await message.answer("name?")

    @router.message(Form.name, F.text)
    async def got_name(message: Message, state: FSMContext) -> None:
        await state.update_data(name=message.text)
        await state.set_state(Form.age)
        await message.answer("age?")

    @router.message(Form.age, F.text)
    async def got_age(
        message: Message, state: FSMContext, session: Session[dict[str, Any]]
    ) -> None:
        assert message.text is not None
        if not message.text.isdigit():
            await message.answer("age must be a number")
            return
        data = await state.update_data(age=int(message.text))
        session.data["profile"] = data
        await state.clear()
        await message.answer(f"registered {data['name']}, {data['age']}")

    @router.message(Command("boom"))
    async def boom(message: Message, session: Session[dict[str, Any]]) -> None:
        session.data["count"] = 999
        raise RuntimeError("handler failed")

    @router.message(Command("slow"))
    async def slow(message: Message, session: Session[dict[str, Any]]) -> None:
        # Read, yield to the loop, write: loses updates unless the user's updates are isolated.
        n = session.data["count"]
        await asyncio.sleep(0.005)
        session.data["count"] = n + 1

    @router.message(Command("tag"))
    async def tag(message: Message, state: FSMContext) -> None:
        assert message.text is not None
        await state.update_data({message.text.split()[1]: True})

    return router


class BotProcess:
    """One bot "process": its own storage object, Dispatcher and Bot over a shared backend."""

    def __init__(self, storage: BaseStorage, *, isolation: bool = True) -> None:
        self.storage = storage
        self.fsm = AiogramStorage(storage)
        events: BaseEventIsolation = (
            self.fsm.create_isolation() if isolation else DisabledEventIsolation()
        )
        self.dp = Dispatcher(storage=self.fsm, events_isolation=events)
        self.dp.update.outer_middleware(SessionMiddleware(storage, initial=lambda: {"count": 0}))
        self.dp.include_router(make_router())
        self.api = RecordingSession()
        self.bot = Bot(TOKEN, session=self.api)

    async def send(self, user_id: int, text: str) -> list[str]:
        """Feed one message; return the bot's replies to it."""
        before = len(self.api.calls)
        await self.dp.feed_update(self.bot, message_update(self.bot, user_id, text))
        return [p["text"] for name, p in self.api.calls[before:] if name == "SendMessage"]

    async def feed(self, user_id: int, text: str) -> None:
        await self.dp.feed_update(self.bot, message_update(self.bot, user_id, text))


async def start(backend: BotBackend) -> BotProcess:
    return BotProcess(await backend.open(), isolation=backend.atomic)


async def assert_cannot_lock(backend: BotBackend) -> None:
    """Without an atomic add there is no cross-process lock, and the isolation says so."""
    isolation = StorageEventIsolation(await backend.open())
    with pytest.raises(UnsupportedOperationError, match="add"):
        async with isolation.lock(KEY):
            pass


# ------------------------------------------------------------------ aiogram's storage contract
# The behaviour aiogram's own suite (tests/test_fsm/storage/test_storages.py) checks for its
# Memory, Redis and Mongo storages, here for every gramio-storage backend.


async def test_states_set_get_and_clear(backend: BotBackend) -> None:
    storage = AiogramStorage(await backend.open())
    assert await storage.get_state(KEY) is None
    await storage.set_state(KEY, "state")
    assert await storage.get_state(KEY) == "state"
    await storage.set_state(KEY, Form.age)
    assert await storage.get_state(KEY) == "Form:age"
    await storage.set_state(KEY, None)
    assert await storage.get_state(KEY) is None


async def test_data_set_get_value_defaults_and_clearing(backend: BotBackend) -> None:
    storage = AiogramStorage(await backend.open())
    assert await storage.get_data(KEY) == {}
    assert await storage.get_value(KEY, "foo") is None
    assert await storage.get_value(KEY, "foo", "baz") == "baz"

    await storage.set_data(KEY, {"foo": "bar"})
    assert await storage.get_data(KEY) == {"foo": "bar"}
    assert await storage.get_value(KEY, "foo") == "bar"
    assert await storage.get_value(KEY, "foo", "baz") == "bar"

    await storage.set_data(KEY, {})
    assert await storage.get_data(KEY) == {}
    assert await storage.get_value(KEY, "foo") is None
    assert await storage.get_value(KEY, "foo", "baz") == "baz"

    class CustomTypedDict(TypedDict, total=False):
        foo: str
        bar: str

    await storage.set_data(KEY, CustomTypedDict(foo="bar", bar="baz"))
    assert await storage.get_data(KEY) == {"foo": "bar", "bar": "baz"}
    assert await storage.get_value(KEY, "foo") == "bar"

    with pytest.raises(DataNotDictLikeError):
        await storage.set_data(KEY, ())  # type: ignore[arg-type]
    assert await storage.get_data(KEY) == {"foo": "bar", "bar": "baz"}  # nothing lost


async def test_update_data_merges_like_dict_update(backend: BotBackend) -> None:
    storage = AiogramStorage(await backend.open())
    assert await storage.get_data(KEY) == {}
    assert await storage.update_data(KEY, {"foo": "bar"}) == {"foo": "bar"}
    assert await storage.update_data(KEY, {}) == {"foo": "bar"}
    assert await storage.get_data(KEY) == {"foo": "bar"}
    assert await storage.update_data(KEY, {"baz": "spam"}) == {"foo": "bar", "baz": "spam"}
    assert await storage.get_data(KEY) == {"foo": "bar", "baz": "spam"}
    assert await storage.update_data(KEY, {"baz": "test"}) == {"foo": "bar", "baz": "test"}
    assert await storage.get_data(KEY) == {"foo": "bar", "baz": "test"}


async def test_returned_data_is_a_copy(backend: BotBackend) -> None:
    storage = AiogramStorage(await backend.open())
    await storage.set_data(KEY, {"list": [1]})
    (await storage.get_data(KEY))["extra"] = 1
    (await storage.update_data(KEY, {"more": 2}))["extra"] = 1
    assert await storage.get_data(KEY) == {"list": [1], "more": 2}


async def test_reference_mode_memory_storage_still_hands_out_copies() -> None:
    storage = AiogramStorage(MemoryStorage(codec=None))
    original = {"a": 1}
    await storage.set_data(KEY, original)
    (await storage.get_data(KEY))["b"] = 2
    assert await storage.get_data(KEY) == {"a": 1}


async def test_keys_follow_aiograms_default_layout() -> None:
    raw = MemoryStorage()
    storage = AiogramStorage(raw)
    await storage.set_state(KEY, Form.name)
    await storage.set_data(KEY, {"name": "Alice"})
    assert sorted([k async for k in raw.keys()]) == ["fsm:-42:42:data", "fsm:-42:42:state"]
    assert await raw.get("fsm:-42:42:state") == "Form:name"
    assert await raw.get("fsm:-42:42:data") == {"name": "Alice"}

    custom = AiogramStorage(raw, key_builder=DefaultKeyBuilder(prefix="bot", with_bot_id=True))
    await custom.set_state(KEY, "x")
    assert await raw.get("bot:42:-42:42:state") == "x"


async def test_state_and_data_ttls_apply() -> None:
    raw = MemoryStorage()
    storage = AiogramStorage(raw, state_ttl=100, data_ttl=datetime.timedelta(seconds=200))
    await storage.set_state(KEY, "s")
    await storage.set_data(KEY, {"a": 1})
    assert await raw.ttl("fsm:-42:42:state") == pytest.approx(100, abs=1)
    assert await raw.ttl("fsm:-42:42:data") == pytest.approx(200, abs=1)
    await raw.set("fsm:-42:42:data", {"a": 1})  # no TTL...
    await storage.update_data(KEY, {"b": 2})  # ...until update_data writes with data_ttl
    assert await raw.ttl("fsm:-42:42:data") == pytest.approx(200, abs=1)


def test_bad_ttls_are_rejected_at_construction() -> None:
    with pytest.raises(InvalidTTLError, match="state_ttl"):
        AiogramStorage(MemoryStorage(), state_ttl=0)
    with pytest.raises(InvalidTTLError, match="data_ttl"):
        AiogramStorage(MemoryStorage(), data_ttl=-5)
    with pytest.raises(TypeError, match="gramio-storage backend"):
        AiogramStorage({})  # type: ignore[arg-type]


async def test_non_dict_stored_data_is_a_decode_error_naming_the_key() -> None:
    raw = MemoryStorage()
    storage = AiogramStorage(raw)
    await raw.set("fsm:-42:42:data", [1, 2])
    with pytest.raises(DecodeError, match="fsm:-42:42:data") as info:
        await storage.get_data(KEY)
    assert info.value.key == "fsm:-42:42:data"
    with pytest.raises(DecodeError, match="not a dict"):
        await storage.update_data(KEY, {"a": 1})
    assert await raw.get("fsm:-42:42:data") == [1, 2]  # nothing overwritten


async def test_data_written_by_aiogram_redis_storage_stays_readable(redis_url: str) -> None:
    """aiogram's own RedisStorage and ours share keys: a bot can switch without losing users."""
    from aiogram.fsm.storage.redis import RedisStorage as AiogramRedisStorage

    from gramio_storage.redis import RedisStorage

    builder = DefaultKeyBuilder(prefix=f"fsm{uuid.uuid4().hex[:8]}")
    theirs = AiogramRedisStorage.from_url(redis_url, key_builder=builder)
    ours = AiogramStorage(RedisStorage.from_url(redis_url), key_builder=builder)
    try:
        await theirs.set_state(KEY, Form.age)
        await theirs.set_data(KEY, {"name": "Alice", "tags": [1, 2]})
        assert await ours.get_state(KEY) == "Form:age"  # stored as bare text, not JSON
        assert await ours.get_data(KEY) == {"name": "Alice", "tags": [1, 2]}
        assert await ours.update_data(KEY, {"age": 30}) == {
            "name": "Alice",
            "tags": [1, 2],
            "age": 30,
        }
        # ...and data we write reads back in aiogram's storage (JSON objects both ways).
        assert await theirs.get_data(KEY) == {"name": "Alice", "tags": [1, 2], "age": 30}
        await theirs.set_state(KEY, "1")  # a state that is valid JSON of another type
        assert await ours.get_state(KEY) == "1"
    finally:
        await theirs.set_state(KEY, None)
        await theirs.set_data(KEY, {})
        await theirs.close()
        await ours.storage.close()


async def test_close_leaves_a_passed_storage_open_and_closes_its_own(tmp_path: Path) -> None:
    raw = MemoryStorage()
    storage = AiogramStorage(raw)
    await storage.close()
    await raw.set("still", "open")
    assert await raw.get("still") == "open"

    owned = AiogramStorage.from_url(f"sqlite:///{tmp_path / 'fsm.db'}", state_ttl=10)
    await owned.set_state(KEY, "s")
    await owned.close()
    again = AiogramStorage.from_url(f"sqlite:///{tmp_path / 'fsm.db'}")
    assert await again.get_state(KEY) == "s"
    await again.close()


# ------------------------------------------------------------------ the real Dispatcher


async def test_a_multi_step_form_and_a_session_counter(backend: BotBackend) -> None:
    bot = await start(backend)
    assert await bot.send(1, "/count") == ["count=1"]
    assert await bot.send(1, "/register") == ["name?"]
    assert await bot.send(1, "Alice") == ["age?"]
    assert await bot.send(1, "thirty") == ["age must be a number"]
    assert await bot.send(1, "30") == ["registered Alice, 30"]
    assert await bot.send(1, "/count") == ["count=2"]
    assert await bot.send(2, "/count") == ["count=1"]  # another user, another session

    key = StorageKey(bot_id=42, chat_id=1, user_id=1)
    assert await bot.fsm.get_state(key) is None  # state.clear() removed state and data
    assert await bot.fsm.get_data(key) == {}
    assert await bot.storage.get("session:1") == {
        "count": 2,
        "profile": {"name": "Alice", "age": 30},
    }


async def test_a_restarted_bot_continues_the_conversation(backend: BotBackend) -> None:
    first = await start(backend)
    assert await first.send(7, "/count") == ["count=1"]
    assert await first.send(7, "/register") == ["name?"]
    assert await first.send(7, "Bob") == ["age?"]
    await first.dp.fsm.close()  # what Dispatcher shutdown does

    second = await start(backend)  # new storage client, Dispatcher and Bot: a new process
    assert await second.send(7, "41") == ["registered Bob, 41"]
    assert await second.send(7, "/count") == ["count=2"]


async def test_a_failing_handler_saves_nothing_and_releases_the_lock(backend: BotBackend) -> None:
    bot = await start(backend)
    await bot.send(3, "/count")
    with pytest.raises(RuntimeError, match="handler failed"):
        await bot.feed(3, "/boom")
    assert await bot.storage.get("session:3") == {"count": 1}  # not the half-updated 999
    assert [k async for k in bot.storage.keys("fsm:")] == []  # no lock left behind
    assert await asyncio.wait_for(bot.send(3, "/count"), 10) == ["count=2"]


async def test_concurrent_updates_of_one_user_are_isolated(backend: BotBackend) -> None:
    if not backend.atomic:
        return await assert_cannot_lock(backend)
    bot = await start(backend)
    await asyncio.gather(*(bot.feed(5, "/slow") for _ in range(10)))
    assert await bot.storage.get("session:5") == {"count": 10}
    assert len(bot.dp.fsm.events_isolation._local) == 0  # type: ignore[attr-defined]


async def test_two_processes_on_one_backend_take_turns(backend: BotBackend) -> None:
    """Two Dispatchers with their own storage clients: the storage-backed lock serialises them."""
    if not backend.atomic:
        return await assert_cannot_lock(backend)
    a, b = await start(backend), await start(backend)
    await asyncio.gather(*((a if i % 2 else b).feed(6, "/slow") for i in range(8)))
    assert await a.storage.get("session:6") == {"count": 8}
    assert [k async for k in a.storage.keys("fsm:")] == []


async def test_concurrent_update_data_loses_no_field(backend: BotBackend) -> None:
    """No isolation at all: update_data alone must not lose a field (aiogram's can)."""
    bot = BotProcess(await backend.open(), isolation=False)
    tags = [f"t{i}" for i in range(12)]
    if backend.atomic:
        await asyncio.gather(*(bot.feed(8, f"/tag {t}") for t in tags))
    else:  # Cloudflare KV: the documented read-then-write fallback, one update at a time
        for t in tags:
            await bot.feed(8, f"/tag {t}")
    key = StorageKey(bot_id=42, chat_id=8, user_id=8)
    assert await bot.fsm.get_data(key) == dict.fromkeys(tags, True)


# ------------------------------------------------------------------ event isolation


async def test_a_lock_left_by_a_dead_process_expires(backend: BotBackend) -> None:
    if not backend.atomic:
        return await assert_cannot_lock(backend)
    storage = await backend.open()
    isolation = StorageEventIsolation(storage, ttl=60, max_poll_interval=0.05)
    # A holder that died: its lock carries a short TTL and nobody will delete it.
    await storage.set("fsm:-42:42:lock", "dead-process", ttl=0.4)
    started = time.monotonic()
    async with asyncio.timeout(10), isolation.lock(KEY):
        waited = time.monotonic() - started
        assert await storage.get("fsm:-42:42:lock") != "dead-process"
    assert waited >= 0.3
    assert not await storage.has("fsm:-42:42:lock")


async def test_the_lock_is_exclusive_and_released_on_error_and_cancel() -> None:
    storage = MemoryStorage()
    isolation = StorageEventIsolation(storage)
    other = StorageEventIsolation(storage)  # another process's isolation, same backend

    with pytest.raises(ValueError, match="inside"):
        async with isolation.lock(KEY):
            raise ValueError("inside")
    assert not await storage.has("fsm:-42:42:lock")

    entered = asyncio.Event()

    async def hold() -> None:
        async with isolation.lock(KEY):
            entered.set()
            await asyncio.Event().wait()  # until cancelled

    holder = asyncio.create_task(hold())
    await entered.wait()
    assert await storage.has("fsm:-42:42:lock")
    waiter = asyncio.create_task(_enter(other))
    await asyncio.sleep(0.05)
    assert not waiter.done()  # the other "process" waits while the lock is held
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    assert await asyncio.wait_for(waiter, 5) is True
    assert not await storage.has("fsm:-42:42:lock")


async def _enter(isolation: StorageEventIsolation) -> bool:
    async with isolation.lock(KEY):
        return True


async def test_locks_never_accumulate() -> None:
    storage = MemoryStorage()
    isolation = StorageEventIsolation(storage)

    async def use(user: int) -> None:
        async with isolation.lock(StorageKey(bot_id=1, chat_id=user, user_id=user)):
            await asyncio.sleep(0)

    await asyncio.gather(*(use(i % 25) for i in range(200)))
    assert len(isolation._local) == 0
    assert len(storage) == 0


def test_isolation_arguments_are_checked() -> None:
    with pytest.raises(InvalidTTLError):
        StorageEventIsolation(MemoryStorage(), ttl=0)
    with pytest.raises(ValueError, match="poll_interval"):
        StorageEventIsolation(MemoryStorage(), poll_interval=1, max_poll_interval=0.5)
    with pytest.raises(TypeError, match="gramio-storage backend"):
        StorageEventIsolation(object())  # type: ignore[arg-type]
    assert repr(StorageEventIsolation(MemoryStorage(), ttl=30)).endswith("ttl=30)")


# ------------------------------------------------------------------ session middleware


async def test_session_middleware_options() -> None:
    storage = MemoryStorage()
    manager = SessionManager(storage, initial=lambda: {"n": 0}, namespace="", lazy=True)
    seen: list[Any] = []
    router = Router()

    @router.message(Command("lazy"))
    async def lazy(message: Message, sess: Session[dict[str, int]]) -> None:
        seen.append(sess.loaded)
        (await sess.load())["n"] += 1

    @router.channel_post()
    async def post(message: Message, sess: Session[Any] | None) -> None:
        seen.append(sess)

    dp = Dispatcher()
    dp.update.outer_middleware(SessionMiddleware(manager, name="sess"))
    dp.include_router(router)
    bot = Bot(TOKEN, session=RecordingSession())
    await dp.feed_update(bot, message_update(bot, 11, "/lazy"))
    assert await storage.get("11") == {"n": 1}  # GramIO's bare "<senderId>" key

    channel_post = Update.model_validate(
        {
            "update_id": next(_update_ids),
            "channel_post": {
                "message_id": 1,
                "date": datetime.datetime.now(datetime.UTC),
                "chat": Chat(id=-100, type="channel").model_dump(),
                "text": "news",
            },
        },
        context={"bot": bot},
    )
    await dp.feed_update(bot, channel_post)
    assert seen == [False, None]  # lazy: not loaded before the handler; no sender: no session

    with pytest.raises(TypeError, match="Pass initial to the SessionManager"):
        SessionMiddleware(manager, initial=dict)


async def test_a_custom_session_key_groups_users() -> None:
    storage = MemoryStorage()
    dp = Dispatcher()
    dp.update.outer_middleware(
        SessionMiddleware(
            storage,
            initial=lambda: {"count": 0},
            key=lambda event, data: f"chat{data['event_chat'].id}",
        )
    )
    dp.include_router(make_router())
    bot = Bot(TOKEN, session=RecordingSession())
    await dp.feed_update(bot, message_update(bot, 12, "/count"))
    assert await storage.get("session:chat12") == {"count": 1}


# ------------------------------------------------------------------ the demo


def _run_demo(*args: str) -> str:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "bot_demo.py"), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=ROOT,
    ).stdout


def test_the_demo_continues_where_the_previous_run_stopped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    first = _run_demo("--storage", url)
    assert "(first run)" in first
    assert "You pressed /count 2 times." in first
    assert first.rstrip().splitlines()[-1].startswith("Run it again")
    assert 'fsm:100:100:state = "Registration:age"' in first  # stopped mid-form

    second = _run_demo("--storage", url)  # a new process: the form's state survived
    assert "Welcome back, Alice! You were about to tell me your age." in second
    assert "Please send your age as a number." in second
    assert "Nice to meet you, Alice (30)!" in second
    assert "You pressed /count 3 times." in second
    assert "fsm:" not in second.split("stored")[1]  # the finished form left nothing behind

    third = _run_demo("--storage", url)
    assert "Welcome back, Alice (30)!" in third
    assert "You pressed /count 4 times." in third

    again = _run_demo("--storage", url, "--reset")
    assert "(first run)" in again
    assert "You pressed /count 1 time." in again


def test_the_demo_runs_on_memory_and_takes_the_url_from_the_environment() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "bot_demo.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "GRAMIO_DEMO_STORAGE": "memory://"},
    ).stdout
    assert "storage: memory:// (first run)" in out
    assert "How old are you, Alice?" in out
