"""The real-token examples build their bots offline, and the PTB one plays the demo's script.

``examples/bot_telegram.py`` (python-telegram-bot) and ``examples/bot_demo.py --token`` (aiogram)
are run by hand with a real token, never in CI. These tests build them with a made-up token and
no network: nothing is initialised against Telegram and no polling starts. The PTB bot also runs
the aiogram demo's conversation through PTB's real ``Application.process_update`` (its HTTP layer
answers with canned JSON), across a restart on a SQLite file, so the example stays true.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from aiogram import Bot
from telegram.ext import Application, CommandHandler, ConversationHandler
from telegram.request import HTTPXRequest

from _ptb_offline import RecordingRequest, message
from gramio_storage import BaseStorage, MemoryStorage, storage_from_url
from gramio_storage.aiogram import AiogramStorage, SessionMiddleware, StorageEventIsolation
from gramio_storage.telegram import StoragePersistence

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAKE_TOKEN = "123456:FAKE-TOKEN-NEVER-SENT"
USER_ID = 100


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bot_telegram = load_example("bot_telegram")
bot_demo = load_example("bot_demo")


async def play(storage: BaseStorage, script: list[str]) -> list[str]:
    """One bot process: start, answer the script, stop as ``run_polling`` would; the replies."""
    request = RecordingRequest(allowed=frozenset({"getMe", "sendMessage"}))
    builder = (
        Application.builder()
        .token(FAKE_TOKEN)
        .request(request)
        .get_updates_request(RecordingRequest(allowed=frozenset()))
    )
    app = bot_telegram.build_application(builder, storage)
    await app.initialize()
    for text in script:
        await app.process_update(message(app, USER_ID, text, "Alice"))
    await app.shutdown()  # PTB's final flush through the persistence
    assert app.post_shutdown is not None
    await app.post_shutdown(app)  # the example closes the storage here
    return request.texts()


async def test_the_telegram_example_continues_the_demo_conversation_after_a_restart(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    first = await play(storage_from_url(url), bot_demo.FIRST_RUN)
    assert first == [
        "Hi! I count your /count presses and remember a /register form.",
        "You pressed /count 1 time.",
        "You pressed /count 2 times.",
        "What is your name?",
        "How old are you, Alice?",
    ]
    async with storage_from_url(url) as storage:  # what the stopped bot left, as JSON
        assert await storage.get(f"ptb:user:{USER_ID}") == {"count": 2, "form": {"name": "Alice"}}
        assert await storage.get(f"ptb:conv:registration:[{USER_ID},{USER_ID}]") == 1  # AGE

    # A new process over the same file: the conversation waits for the age.
    second = await play(storage_from_url(url), bot_demo.RESUMED)
    assert second == [
        "Welcome back, Alice! You were about to tell me your age.",
        "Please send your age as a number.",
        "Nice to meet you, Alice (30)!",
        "You pressed /count 3 times.",
        "Profile: Alice, 30. /count pressed 3 times.",
    ]
    async with storage_from_url(url) as storage:
        assert await storage.get(f"ptb:user:{USER_ID}") == {
            "count": 3,
            "profile": {"name": "Alice", "age": 30},
        }
        assert not await storage.has(f"ptb:conv:registration:[{USER_ID},{USER_ID}]")

    third = await play(storage_from_url(url), bot_demo.LATER_RUNS)
    assert third[0] == "Welcome back, Alice (30)!"


async def test_the_telegram_example_builds_for_a_real_token_without_the_network() -> None:
    storage = MemoryStorage()
    app = bot_telegram.build_application(Application.builder().token(FAKE_TOKEN), storage)
    # Built, not initialised: no getMe, no polling. It would talk to Telegram over HTTPX.
    assert isinstance(app.bot.request, HTTPXRequest)
    assert app.bot.token == FAKE_TOKEN
    assert isinstance(app.persistence, StoragePersistence) and app.persistence.storage is storage
    handlers = app.handlers[0]
    [conversation] = [h for h in handlers if isinstance(h, ConversationHandler)]
    assert conversation.persistent and conversation.name == "registration"
    commands = {c for h in handlers if isinstance(h, CommandHandler) for c in h.commands}
    assert commands == {"start", "count", "profile"}


def test_the_telegram_example_asks_for_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        bot_telegram.main(["--storage", "memory://"])
    assert exit_info.value.code == 2
    assert "TELEGRAM_BOT_TOKEN" in capsys.readouterr().err


async def test_the_aiogram_demo_builds_for_a_real_token_without_the_network() -> None:
    # `bot_demo.py --token` runs this dispatcher with Bot(token).start_polling(): build both.
    storage = MemoryStorage()
    dp = bot_demo.build_dispatcher(storage)
    bot = Bot(FAKE_TOKEN)  # its HTTP session opens on the first request, which never comes
    assert bot.id == 123456
    assert isinstance(dp.storage, AiogramStorage) and dp.storage.storage is storage
    assert isinstance(dp.fsm.events_isolation, StorageEventIsolation)
    [session] = [m for m in dp.update.outer_middleware if isinstance(m, SessionMiddleware)]
    assert session.manager.storage is storage
    assert dp.resolve_used_update_types() == ["message"]
