"""pyTelegramBotAPI runs its states on gramio-storage, side by side with its own memory storage.

The real ``AsyncTeleBot`` and ``TeleBot`` process real ``Update`` objects
(``process_new_updates``) through a custom states flow; their HTTP calls go to a fake Bot API
server on 127.0.0.1 (telebot's ``API_URL`` pointed at it), so nothing touches the network. The
same flow runs on telebot's ``StateMemoryStorage``: replies and stored records must match.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from telebot import TeleBot, apihelper, asyncio_filters, asyncio_helper, custom_filters, types
from telebot import asyncio_storage as telebot_async_storage
from telebot import storage as telebot_sync_storage
from telebot.async_telebot import AsyncTeleBot
from telebot.states import State, StatesGroup
from telebot.states.asyncio.context import StateContext as AsyncStateContext
from telebot.states.asyncio.middleware import StateMiddleware as AsyncStateMiddleware
from telebot.states.sync.context import StateContext as SyncStateContext
from telebot.states.sync.middleware import StateMiddleware as SyncStateMiddleware

from _bot_backends import *  # noqa: F403  (the `backend` fixture and the server fixtures)
from _bot_backends import BotBackend
from _pg_server import pg_server, postgres_dsn  # noqa: F401  (fixtures of the sync tests)
from _redis_server import redis_server_session, redis_url  # noqa: F401
from gramio_storage import (
    BackendTimeoutError,
    BaseStorage,
    ConfigurationError,
    DecodeError,
    InvalidTTLError,
    MemoryStorage,
    StorageClosedError,
    StorageError,
    storage_from_url,
)
from gramio_storage.telebot import (
    AsyncTeleBotStorage,
    LoopThread,
    StateNotSetError,
    TeleBotStorage,
    build_key,
)

TOKEN = "111:TEST-TOKEN"
BOT_ID = 111

# ------------------------------------------------------------------ a fake Bot API on loopback


class FakeBotAPI:
    """A Bot API on 127.0.0.1 that records every call and answers with canned JSON."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1000)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                api._answer(self)

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def api_url(self) -> str:
        """telebot's ``API_URL`` template for this server."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/bot{{0}}/{{1}}"

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        method = url.path.rsplit("/", 1)[1]
        params = dict(parse_qsl(url.query))
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        if body:
            content_type = handler.headers.get("Content-Type", "")
            assert "x-www-form-urlencoded" in content_type, content_type
            params.update(parse_qsl(body.decode()))
        with self._lock:
            self.calls.append((method, params))
            message_id = next(self._ids)
        result: Any = True
        if method == "getMe":
            result = {"id": BOT_ID, "is_bot": True, "first_name": "Test", "username": "test_bot"}
        elif method == "sendMessage":
            result = {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": int(params["chat_id"]), "type": "private"},
                "text": params["text"],
            }
        payload = json.dumps({"ok": True, "result": result}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def texts(self) -> list[str]:
        """Every message sent, in order, as ``"<chat>[/<thread>]: <text>"``."""
        with self._lock:
            calls = list(self.calls)
        out = []
        for method, p in calls:
            if method == "sendMessage":
                where = p["chat_id"] + (
                    f"/{p['message_thread_id']}" if "message_thread_id" in p else ""
                )
                out.append(f"{where}: {p['text']}")
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def fake_api() -> Iterator[FakeBotAPI]:
    api = FakeBotAPI()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
async def api(fake_api: FakeBotAPI, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The fake Bot API, with both telebot HTTP layers pointed at it and its log cleared."""
    monkeypatch.setattr(asyncio_helper, "API_URL", fake_api.api_url)
    monkeypatch.setattr(apihelper, "API_URL", fake_api.api_url)
    # requests.request opens and closes a session per call: no per-thread session left behind.
    monkeypatch.setattr(apihelper, "CUSTOM_REQUEST_SENDER", requests.request)
    with fake_api._lock:
        fake_api.calls.clear()
    yield fake_api
    session = asyncio_helper.session_manager.session
    if session is not None:
        await session.close()
        asyncio_helper.session_manager.session = None


_update_ids = itertools.count(1)

Step = tuple[Any, ...]
"""``(user, text)`` in a private chat, or ``(user, text, chat, thread)`` in a forum topic."""


def update(step: Step) -> types.Update:
    user, text, *where = step
    n = next(_update_ids)
    chat: dict[str, Any] = {"id": user, "type": "private"}
    message: dict[str, Any] = {
        "message_id": n,
        "date": int(time.time()),
        "from": {"id": user, "is_bot": False, "first_name": f"User{user}"},
        "text": text,
    }
    if where:
        chat = {"id": where[0], "type": "supergroup", "title": "Forum", "is_forum": True}
        message |= {"message_thread_id": where[1], "is_topic_message": True}
    message["chat"] = chat
    if text.startswith("/"):
        command = text.split()[0]
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    parsed = types.Update.de_json({"update_id": n, "message": message})
    assert parsed is not None
    return parsed


# ------------------------------------------------------------------ the bots under test


class Form(StatesGroup):
    name = State()
    age = State()
    done = State()


class Errors:
    """telebot's exception handler: collect what the handlers raised instead of logging it."""

    def __init__(self) -> None:
        self.seen: list[BaseException] = []

    def handle(self, exception: BaseException) -> bool:
        self.seen.append(exception)
        return True


def _thread(message: types.Message) -> int | None:
    return message.message_thread_id if message.is_topic_message else None


def async_bot(states: Any, errors: Errors) -> AsyncTeleBot:
    """A registration form on AsyncTeleBot's states, as its documentation shows it."""
    bot = AsyncTeleBot(TOKEN, state_storage=states, exception_handler=errors)
    bot.add_custom_filter(asyncio_filters.StateFilter(bot))
    bot.add_custom_filter(asyncio_filters.IsDigitFilter())
    bot.setup_middleware(AsyncStateMiddleware(bot))

    async def say(message: types.Message, text: str) -> None:
        await bot.send_message(message.chat.id, text, message_thread_id=_thread(message))

    @bot.message_handler(commands=["cancel"], state="*")
    async def cancel(message: types.Message, state: AsyncStateContext) -> None:
        await state.delete()
        await say(message, "Cancelled.")

    @bot.message_handler(commands=["show"])
    async def show(message: types.Message, state: AsyncStateContext) -> None:
        current = await state.get()
        async with state.data() as data:
            shown = json.dumps(data, sort_keys=True)
        await say(message, f"state={current} data={shown}")

    @bot.message_handler(commands=["start"])
    async def start(message: types.Message, state: AsyncStateContext) -> None:
        await state.set(Form.name)
        await say(message, "What is your name?")

    @bot.message_handler(state=Form.name)
    async def got_name(message: types.Message, state: AsyncStateContext) -> None:
        await state.add_data(name=message.text)
        await state.set(Form.age)
        await say(message, f"How old are you, {message.text}?")

    @bot.message_handler(state=Form.age, is_digit=True)
    async def got_age(message: types.Message, state: AsyncStateContext) -> None:
        async with state.data() as data:
            data["age"] = int(message.text or 0)
            name = data["name"]
        await state.set(Form.done)
        await say(message, f"Saved: {name}, {message.text}.")

    @bot.message_handler(state=Form.age, is_digit=False)
    async def bad_age(message: types.Message, state: AsyncStateContext) -> None:
        await say(message, "Please send your age as a number.")

    return bot


def sync_bot(states: Any, errors: Errors) -> TeleBot:
    """The same form on the synchronous TeleBot."""
    bot = TeleBot(
        TOKEN,
        threaded=False,
        state_storage=states,
        use_class_middlewares=True,
        exception_handler=errors,
    )
    bot.add_custom_filter(custom_filters.StateFilter(bot))
    bot.add_custom_filter(custom_filters.IsDigitFilter())
    bot.setup_middleware(SyncStateMiddleware(bot))

    def say(message: types.Message, text: str) -> None:
        bot.send_message(message.chat.id, text, message_thread_id=_thread(message))

    @bot.message_handler(commands=["cancel"], state="*")
    def cancel(message: types.Message, state: SyncStateContext) -> None:
        state.delete()
        say(message, "Cancelled.")

    @bot.message_handler(commands=["show"])
    def show(message: types.Message, state: SyncStateContext) -> None:
        current = state.get()
        with state.data() as data:
            shown = json.dumps(data, sort_keys=True)
        say(message, f"state={current} data={shown}")

    @bot.message_handler(commands=["start"])
    def start(message: types.Message, state: SyncStateContext) -> None:
        state.set(Form.name)
        say(message, "What is your name?")

    @bot.message_handler(state=Form.name)
    def got_name(message: types.Message, state: SyncStateContext) -> None:
        state.add_data(name=message.text)
        state.set(Form.age)
        say(message, f"How old are you, {message.text}?")

    @bot.message_handler(state=Form.age, is_digit=True)
    def got_age(message: types.Message, state: SyncStateContext) -> None:
        with state.data() as data:
            data["age"] = int(message.text or 0)
            name = data["name"]
        state.set(Form.done)
        say(message, f"Saved: {name}, {message.text}.")

    @bot.message_handler(state=Form.age, is_digit=False)
    def bad_age(message: types.Message, state: SyncStateContext) -> None:
        say(message, "Please send your age as a number.")

    return bot


# Two users in private chats, then one user in two topics of a forum (separate states).
SCRIPT: list[Step] = [
    (42, "/show"),
    (42, "/start"),
    (7, "/start"),
    (42, "Alice"),
    (42, "thirty"),
    (7, "Bob"),
    (42, "/show"),
    (42, "30"),
    (42, "/show"),
    (7, "/cancel"),
    (7, "/show"),
    (42, "/start", -100500, 5),
    (42, "Carol", -100500, 6),  # another topic: no state there, so no handler answers
    (42, "Carol", -100500, 5),
    (42, "/show", -100500, 5),
]
BREAK = 5  # where the restart tests stop the first process: in the middle of both forms

EXPECTED_REPLIES = [
    "42: state=None data={}",
    "42: What is your name?",
    "7: What is your name?",
    "42: How old are you, Alice?",
    "42: Please send your age as a number.",
    "7: How old are you, Bob?",
    '42: state=Form:age data={"name": "Alice"}',
    "42: Saved: Alice, 30.",
    '42: state=Form:done data={"age": 30, "name": "Alice"}',
    "7: Cancelled.",
    "7: state=None data={}",
    "-100500/5: What is your name?",
    "-100500/5: How old are you, Carol?",
    '-100500/5: state=Form:age data={"name": "Carol"}',
]
EXPECTED_RECORDS = {
    f"telebot:{BOT_ID}:42:42": {"state": "Form:done", "data": {"name": "Alice", "age": 30}},
    f"telebot:{BOT_ID}:5:-100500:42": {"state": "Form:age", "data": {"name": "Carol"}},
}


async def play_async(states: Any, api: FakeBotAPI, steps: list[Step]) -> list[str]:
    errors = Errors()
    bot = async_bot(states, errors)
    before = len(api.texts())
    for step in steps:
        await bot.process_new_updates([update(step)])
    assert errors.seen == []
    return api.texts()[before:]


def play_sync(states: Any, api: FakeBotAPI, steps: list[Step]) -> list[str]:
    errors = Errors()
    bot = sync_bot(states, errors)
    before = len(api.texts())
    for step in steps:
        bot.process_new_updates([update(step)])
    assert errors.seen == []
    return api.texts()[before:]


async def records(storage: BaseStorage) -> dict[str, Any]:
    return {k: await storage.get(k) async for k in storage.keys("telebot:")}


# ------------------------------------------------------------------ AsyncTeleBot


async def test_the_async_bot_runs_the_form_exactly_as_on_telebots_memory_storage(
    backend: BotBackend, api: FakeBotAPI
) -> None:
    """Same replies, and the same records under the same keys as telebot's StateMemoryStorage."""
    theirs = telebot_async_storage.StateMemoryStorage()
    assert await play_async(theirs, api, SCRIPT) == EXPECTED_REPLIES
    assert theirs.data == EXPECTED_RECORDS

    storage = await backend.open()
    assert await play_async(AsyncTeleBotStorage(storage), api, SCRIPT) == EXPECTED_REPLIES
    assert await records(storage) == theirs.data


async def test_a_restarted_async_bot_continues_both_forms(
    backend: BotBackend, api: FakeBotAPI
) -> None:
    """A new process (new storage object, new bot) picks up mid-form; memory could not."""
    first = await play_async(AsyncTeleBotStorage(await backend.open()), api, SCRIPT[:BREAK])
    rest = await play_async(AsyncTeleBotStorage(await backend.open()), api, SCRIPT[BREAK:])
    assert first + rest == EXPECTED_REPLIES
    assert await records(await backend.open()) == EXPECTED_RECORDS


async def test_the_storage_answers_like_telebots_memory_storage_call_by_call(
    backend: BotBackend,
) -> None:
    """Every method, every key part, every edge: same return values, errors and records."""
    theirs = telebot_async_storage.StateMemoryStorage()
    storage = await backend.open()
    ours = AsyncTeleBotStorage(storage)
    parts = [
        {},
        {"bot_id": BOT_ID},
        {"bot_id": BOT_ID, "message_thread_id": 9},
        {"bot_id": BOT_ID, "business_connection_id": "bc-1", "message_thread_id": 9},
    ]

    async def both(method: str, *args: Any, **kwargs: Any) -> Any:
        answers = []
        for states in (theirs, ours):
            try:
                answers.append(await getattr(states, method)(*args, **kwargs))
            except RuntimeError:  # telebot's error, and StateNotSetError (a RuntimeError)
                answers.append(RuntimeError)
        assert answers[0] == answers[1], (method, args, kwargs, answers)
        return answers[1]

    for kw in parts:
        assert await both("get_state", 1, 2, **kw) is None
        assert await both("get_data", 1, 2, **kw) == {}
        assert await both("set_data", 1, 2, "k", "v", **kw) is RuntimeError
        assert await both("reset_data", 1, 2, **kw) is False
        assert await both("save", 1, 2, {"x": 1}, **kw) is False
        assert await both("delete_state", 1, 2, **kw) is False
        assert await both("set_state", 1, 2, Form.name, **kw) is True
        assert await both("get_state", 1, 2, **kw) == "Form:name"
        assert await both("set_data", 1, 2, "k", {"nested": [1, 2]}, **kw) is True
        assert await both("set_state", 1, 2, "custom", **kw) is True  # keeps the data
        assert await both("get_data", 1, 2, **kw) == {"k": {"nested": [1, 2]}}
        assert await both("save", 1, 2, {"x": 1}, **kw) is True
        assert await both("reset_data", 1, 2, **kw) is True
        assert await both("set_data", 1, 2, "n", 5, **kw) is True
    assert await both("set_state", 3, 3, 17) is True  # an int state stays an int
    assert await both("get_state", 3, 3) == 17
    assert await both("delete_state", 3, 3) is True
    assert await records(storage) == theirs.data
    assert len(theirs.data) == len(parts)


def test_keys_are_built_exactly_as_telebot_builds_them() -> None:
    """Every combination of key parts, falsy ones included, gives telebot's own key."""
    theirs = telebot_sync_storage.StateMemoryStorage()
    for bot_id, business, thread, chat, user in itertools.product(
        [None, 0, 111], [None, "", "bc"], [None, 0, 7], [None, -100, 5], [None, 5]
    ):
        expected = theirs._get_key(chat, user, "telebot", ":", business, thread, bot_id)
        assert build_key("telebot", ":", chat, user, business, thread, bot_id) == expected
    ours = AsyncTeleBotStorage(MemoryStorage(), prefix="bot", separator="|")
    assert ours.key(1, 2, "b", 3, 4) == theirs._get_key(1, 2, "bot", "|", "b", 3, 4)


async def test_interactive_data_writes_once_at_exit_and_nothing_when_unchanged() -> None:
    """Three changes in a block are one write at exit; an unchanged block writes nothing."""
    writes: list[str] = []

    class Counting(MemoryStorage):
        async def update(self, key: Any, fn: Any, **kwargs: Any) -> Any:
            writes.append(key)
            return await super().update(key, fn, **kwargs)

        async def set(self, key: Any, value: Any, **kwargs: Any) -> None:
            writes.append(key)
            await super().set(key, value, **kwargs)

    ours = AsyncTeleBotStorage(Counting())
    await ours.set_state(1, 1, Form.name)
    writes.clear()
    context = ours.get_interactive_data(1, 1)
    async with context as data:
        data["a"] = 1
        data["b"] = [1]
        data["b"].append(2)
        assert writes == []  # nothing is written inside the block
    assert writes == ["telebot:1:1"] and context.saved
    assert await ours.get_data(1, 1) == {"a": 1, "b": [1, 2]}

    writes.clear()
    async with ours.get_interactive_data(1, 1) as data:
        data["b"] = [1, 2]  # equal to what is stored: not a change
    assert writes == []
    async with ours.get_interactive_data(1, 1) as data:
        del data["a"]
    assert await ours.get_data(1, 1) == {"b": [1, 2]}


async def test_a_failing_block_saves_nothing_and_its_error_propagates() -> None:
    """telebot's own context saves half-done data and swallows the error; ours does neither."""
    theirs = telebot_async_storage.StateMemoryStorage()
    ours = AsyncTeleBotStorage(MemoryStorage())
    for states in (theirs, ours):
        await states.set_state(1, 1, Form.name)
        await states.set_data(1, 1, "step", 1)

    async with theirs.get_interactive_data(1, 1) as data:
        data["step"] = 2
        raise ValueError("handler bug")  # swallowed by telebot's StateDataContext
    assert await theirs.get_data(1, 1) == {"step": 2}

    async def failing_handler() -> None:
        async with ours.get_interactive_data(1, 1) as data:
            data["step"] = 2
            raise ValueError("handler bug")

    with pytest.raises(ValueError, match="handler bug"):
        await failing_handler()
    assert await ours.get_data(1, 1) == {"step": 1}


async def test_overlapping_blocks_of_one_user_keep_both_changes() -> None:
    """Two handlers editing different fields at once: ours merges, telebot's last save wins."""
    theirs = telebot_async_storage.StateMemoryStorage()
    ours = AsyncTeleBotStorage(MemoryStorage())
    for states in (theirs, ours):
        await states.set_state(1, 1, Form.name)
        first, second = states.get_interactive_data(1, 1), states.get_interactive_data(1, 1)
        a = await first.__aenter__()
        b = await second.__aenter__()
        a["name"] = "Alice"
        b["age"] = 30
        await first.__aexit__(None, None, None)
        await second.__aexit__(None, None, None)
    assert await theirs.get_data(1, 1) == {"age": 30}  # "name" was lost
    assert await ours.get_data(1, 1) == {"name": "Alice", "age": 30}


async def test_two_processes_adding_fields_at_once_lose_none(backend: BotBackend) -> None:
    """2 storage objects x 50 concurrent set_data of distinct fields: all 100 fields stored."""
    if not backend.atomic:
        pytest.skip("Cloudflare KV has no atomic update: read-then-write, like telebot's own")
    one, two = AsyncTeleBotStorage(await backend.open()), AsyncTeleBotStorage(await backend.open())
    await one.set_state(5, 5, Form.name, bot_id=BOT_ID)
    await asyncio.gather(
        *((one if i % 2 else two).set_data(5, 5, f"f{i}", i, bot_id=BOT_ID) for i in range(100)),
        *(two.set_state(5, 5, Form.age, bot_id=BOT_ID) for _ in range(5)),
    )
    assert await one.get_data(5, 5, bot_id=BOT_ID) == {f"f{i}": i for i in range(100)}
    assert await two.get_state(5, 5, bot_id=BOT_ID) == "Form:age"


async def test_set_data_without_a_state_raises_a_typed_error_and_writes_nothing() -> None:
    """StateNotSetError is a StorageError and the RuntimeError telebot code catches."""
    storage = MemoryStorage()
    ours = AsyncTeleBotStorage(storage)
    with pytest.raises(StateNotSetError, match="telebot:1:2") as info:
        await ours.set_data(1, 2, "k", "v")
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, StorageError)
    assert info.value.key == "telebot:1:2"
    assert await storage.has("telebot:1:2") is False


async def test_a_foreign_value_under_a_state_key_is_a_decode_error_naming_it() -> None:
    storage = MemoryStorage()
    await storage.set("telebot:1:2", ["not", "a", "record"])
    await storage.set("telebot:3:4", {"state": "x", "data": "not a dict"})
    ours = AsyncTeleBotStorage(storage)
    for chat, user in ((1, 2), (3, 4)):
        with pytest.raises(DecodeError, match=f"telebot:{chat}:{user}"):
            await ours.get_state(chat, user)
        with pytest.raises(DecodeError):
            await ours.set_state(chat, user, "s")
    assert await storage.get("telebot:1:2") == ["not", "a", "record"]


async def test_ttl_applies_to_every_write(backend: BotBackend) -> None:
    storage = await backend.open()
    ours = AsyncTeleBotStorage(storage, ttl=120)
    await ours.set_state(1, 2, Form.name)
    left = await storage.ttl("telebot:1:2")
    assert left is not None and 100 < left <= 120


async def test_reference_mode_memory_storage_hands_out_copies() -> None:
    """With MemoryStorage(codec=None), mutating get_data's dict does not change the store."""
    ours = AsyncTeleBotStorage(MemoryStorage(codec=None))
    await ours.set_state(1, 1, "s")
    await ours.set_data(1, 1, "items", [1])
    (await ours.get_data(1, 1))["items"].append(2)
    assert await ours.get_data(1, 1) == {"items": [1]}
    async with ours.get_interactive_data(1, 1) as data:
        data["items"].append(3)
    assert await ours.get_data(1, 1) == {"items": [1, 3]}


async def test_from_url_owns_its_backend_and_a_passed_one_stays_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'states.db'}"
    owned = AsyncTeleBotStorage.from_url(url)
    await owned.set_state(1, 1, "s")
    await owned.close()
    assert owned.storage.closed
    passed = storage_from_url(url)
    states = AsyncTeleBotStorage(passed)
    await states.close()
    assert await states.get_state(1, 1) == "s"  # still open: its owner closes it
    await passed.close()


def _loop_threads() -> int:
    return sum(t.name.startswith("gramio-storage-loop") for t in threading.enumerate())


def test_bad_arguments_are_typed_errors() -> None:
    storage = MemoryStorage()
    before = _loop_threads()
    for kwargs in ({"prefix": ""}, {"separator": ""}, {"prefix": 1}):
        with pytest.raises(ConfigurationError):
            AsyncTeleBotStorage(storage, **kwargs)
    with pytest.raises(ConfigurationError, match="BaseStorage"):
        AsyncTeleBotStorage(telebot_async_storage.StateMemoryStorage())  # type: ignore[arg-type]
    for ttl in (0, -1, float("nan"), float("inf"), "60", True):
        with pytest.raises(InvalidTTLError):
            AsyncTeleBotStorage(storage, ttl=ttl)  # type: ignore[arg-type]
    for timeout in (0, -1, float("nan"), float("inf"), "1", True):
        with pytest.raises(ConfigurationError):
            LoopThread(timeout=timeout)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            TeleBotStorage(storage, timeout=timeout)  # type: ignore[arg-type]
    plain_loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ConfigurationError, match="LoopThread"):
            TeleBotStorage(storage, loop=plain_loop)  # type: ignore[arg-type]
    finally:
        plain_loop.close()
    assert _loop_threads() == before  # the failed constructions started no loop thread


# ------------------------------------------------------------------ TeleBot (synchronous)


class SyncBackend:
    """Storages for the synchronous bot, opened and closed on the loop thread they run on."""

    def __init__(self, name: str, url: str | None) -> None:
        self.name = name
        self.url = url
        self.loop = LoopThread(timeout=30)
        self.prefix = f"t{uuid.uuid4().hex[:12]}:"
        self._memory: MemoryStorage | None = None
        self._roots: list[BaseStorage] = []

    def open(self) -> BaseStorage:
        """A new storage object over this test's data (what a restarted process opens)."""

        async def make() -> BaseStorage:
            if self.url is None:
                if self._memory is None:
                    self._memory = MemoryStorage()
                return self._memory
            root = storage_from_url(self.url)
            self._roots.append(root)
            return root

        return self.loop.run(make()).with_prefix(self.prefix)

    def run(self, coro: Any) -> Any:
        return self.loop.run(coro)

    def close(self) -> None:
        async def cleanup() -> None:
            roots = self._roots or ([self._memory] if self._memory else [])
            if roots:
                await roots[0].with_prefix(self.prefix).clear()
            for root in roots:
                await root.close()

        try:
            self.loop.run(cleanup())
        finally:
            self.loop.close()


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def sync_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SyncBackend]:
    name: str = request.param
    url = {
        "memory": lambda: None,
        "sqlite": lambda: f"sqlite:///{tmp_path / 'sync.db'}",
        "redis": lambda: request.getfixturevalue("redis_url"),
        "postgres": lambda: request.getfixturevalue("postgres_dsn"),
    }[name]()
    backend = SyncBackend(name, url)
    try:
        yield backend
    finally:
        backend.close()


async def test_the_sync_bot_runs_the_form_exactly_as_on_telebots_memory_storage(
    sync_backend: SyncBackend, api: FakeBotAPI
) -> None:
    """TeleBot on our storage: same replies and records as on telebot's StateMemoryStorage.

    The test's own event loop is running meanwhile (this is an async test): the sync calls
    run on the storage's loop thread, so they neither need nor block on it.
    """
    theirs = telebot_sync_storage.StateMemoryStorage()
    assert await asyncio.to_thread(play_sync, theirs, api, SCRIPT) == EXPECTED_REPLIES
    assert theirs.data == EXPECTED_RECORDS

    storage = sync_backend.open()
    states = TeleBotStorage(storage, loop=sync_backend.loop)
    assert play_sync(states, api, SCRIPT) == EXPECTED_REPLIES  # called in a running loop
    assert sync_backend.run(records(storage)) == theirs.data


def test_a_restarted_sync_bot_continues_both_forms(
    sync_backend: SyncBackend, api: FakeBotAPI
) -> None:
    first = play_sync(
        TeleBotStorage(sync_backend.open(), loop=sync_backend.loop), api, SCRIPT[:BREAK]
    )
    rest = play_sync(
        TeleBotStorage(sync_backend.open(), loop=sync_backend.loop), api, SCRIPT[BREAK:]
    )
    assert first + rest == EXPECTED_REPLIES
    assert sync_backend.run(records(sync_backend.open())) == EXPECTED_RECORDS


def test_the_sync_storage_answers_like_telebots_sync_memory_storage() -> None:
    theirs = telebot_sync_storage.StateMemoryStorage()
    with TeleBotStorage(MemoryStorage(), timeout=5) as ours:
        for states in (theirs, ours):
            with pytest.raises(RuntimeError):
                states.set_data(1, 2, "k", "v", bot_id=BOT_ID)
            assert states.set_state(1, 2, Form.name, bot_id=BOT_ID) is True
            assert states.set_data(1, 2, "k", "v", bot_id=BOT_ID) is True
            with states.get_interactive_data(1, 2, bot_id=BOT_ID) as data:
                data["n"] = 1
            assert states.get_data(1, 2, bot_id=BOT_ID) == {"k": "v", "n": 1}
            assert states.get_state(1, 2, bot_id=BOT_ID) == "Form:name"
            assert states.reset_data(1, 2, bot_id=BOT_ID) is True
            assert states.save(1, 2, {"s": 1}, bot_id=BOT_ID) is True
            assert states.save(9, 9, {"s": 1}) is False
        got = ours.loop.run(records(ours.storage))
    assert got == theirs.data


def test_sync_calls_from_many_threads_and_from_a_thread_running_its_own_loop() -> None:
    """8 worker threads at once, and a thread inside asyncio.run(): all answer, none hangs."""
    with TeleBotStorage(MemoryStorage(), timeout=10) as states:

        def worker(user: int) -> dict[str, Any]:
            states.set_state(user, user, Form.name)
            for i in range(20):
                states.set_data(user, user, f"f{i}", i)
            return states.get_data(user, user)

        results: list[Any] = []
        threads = [threading.Thread(target=lambda u=u: results.append(worker(u))) for u in range(8)]

        async def inside_a_loop() -> Any:
            await asyncio.sleep(0)
            return states.get_data(0, 0)  # a sync call while this thread's loop runs

        looped: list[Any] = []
        states.set_state(0, 0, Form.name)
        for i in range(20):
            states.set_data(0, 0, f"f{i}", i)
        loop_thread = threading.Thread(target=lambda: looped.append(asyncio.run(inside_a_loop())))
        for t in [*threads, loop_thread]:  # all at once
            t.start()
        for t in [*threads, loop_thread]:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in [*threads, loop_thread])
        assert results == [{f"f{i}": i for i in range(20)}] * 8
        assert looped == [{f"f{i}": i for i in range(20)}]


def test_a_sync_call_from_the_loop_thread_itself_raises_instead_of_deadlocking() -> None:
    with TeleBotStorage(MemoryStorage(), timeout=5) as states:

        async def reentrant() -> Any:
            return states.get_state(1, 1)  # would wait for the very loop it runs on

        with pytest.raises(RuntimeError, match="own loop thread"):
            states.loop.run(reentrant())
        assert states.set_state(1, 1, "still works") is True


def test_a_backend_that_never_answers_times_out_and_the_loop_stays_usable() -> None:
    """BackendTimeoutError after `timeout`, the stuck call is cancelled, the next call works."""
    started = threading.Event()

    class Stuck(MemoryStorage):
        async def get(self, key: Any, default: Any = None) -> Any:
            started.set()
            await asyncio.Event().wait()  # never set: a server that stopped answering

    states = TeleBotStorage(Stuck(), timeout=0.3)
    try:
        begin = time.monotonic()
        with pytest.raises(BackendTimeoutError, match=r"0\.3s"):
            states.get_state(1, 1)
        elapsed = time.monotonic() - begin
        assert started.is_set() and 0.3 <= elapsed < 5
        assert isinstance(BackendTimeoutError("x"), TimeoutError)
        assert states.set_state(1, 1, "s") is True  # update() does not go through get()
        assert not asyncio.all_tasks(states.loop.loop)  # the stuck call was cancelled
    finally:
        states.close()
    assert not states.loop.thread.is_alive()


def test_close_stops_the_loop_thread_and_later_calls_fail_cleanly(tmp_path: Path) -> None:
    states = TeleBotStorage.from_url(f"sqlite:///{tmp_path / 'sync.db'}")
    states.set_state(1, 1, Form.age)
    thread = states.loop.thread
    states.close()
    states.close()  # idempotent
    assert not thread.is_alive() and states.storage.closed
    with pytest.raises(StorageClosedError):
        states.get_state(1, 1)
    with TeleBotStorage.from_url(f"sqlite:///{tmp_path / 'sync.db'}") as again:
        assert again.get_state(1, 1) == "Form:age"  # written before close, read by a new one

    shared = LoopThread()
    try:
        with TeleBotStorage(MemoryStorage(), loop=shared) as states:
            states.set_state(1, 1, "s")
        assert not shared.closed and shared.thread.is_alive()  # a passed loop stays open
        assert shared.run(asyncio.sleep(0, "ok")) == "ok"
    finally:
        shared.close()
    with pytest.raises(StorageClosedError):
        shared.run(asyncio.sleep(0))
