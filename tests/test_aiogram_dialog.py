"""aiogram-dialog runs on gramio-storage: its dialog stack and context live in our FSM storage.

A two-window dialog is started, then the bot "restarts": a new storage object over the same data
(the same SQLite file, the same Redis database), a new Dispatcher and a new dialog registry. The
next button press continues the dialog in its second window. The Bot's HTTP session is the
recording stand-in from ``test_aiogram`` (no network).
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot, Dispatcher, Router
from aiogram.filters import CommandStart
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.base import DefaultKeyBuilder, StorageKey
from aiogram.methods import EditMessageText, TelegramMethod
from aiogram.types import Message, Update
from aiogram_dialog import Dialog, DialogManager, StartMode, Window, setup_dialogs
from aiogram_dialog.widgets.kbd import Next, SwitchTo
from aiogram_dialog.widgets.text import Const

from _bot_backends import BotBackend
from _redis_server import *  # noqa: F403  (the redis_url fixture and the session's server)
from gramio_storage import BaseStorage, storage_from_url
from gramio_storage.aiogram import AiogramStorage
from test_aiogram import TOKEN, RecordingSession, message_update

USER = 4242


class Wizard(StatesGroup):
    first = State()
    second = State()


class DialogSession(RecordingSession):
    """The recording session, also answering the ``editMessageText`` calls dialogs make."""

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[Any],
        timeout: int | None = None,  # noqa: ASYNC109
    ) -> Any:
        if isinstance(method, EditMessageText):
            params = method.model_dump(exclude_none=True)
            self.calls.append((type(method).__name__, params))
            return Message.model_validate(
                {
                    "message_id": params["message_id"],
                    "date": datetime.datetime.now(datetime.UTC),
                    "chat": {"id": params["chat_id"], "type": "private"},
                    "text": params.get("text"),
                },
                context={"bot": bot},
            )
        return await super().make_request(bot, method, timeout)


class DialogBot:
    """One bot process: its own storage object, Dispatcher, Router and Dialog objects."""

    def __init__(self, storage: BaseStorage) -> None:
        # aiogram-dialog keeps its stacks under their own StorageKey destiny.
        self.fsm = AiogramStorage(storage, key_builder=DefaultKeyBuilder(with_destiny=True))
        self.dp = Dispatcher(storage=self.fsm, events_isolation=self.fsm.create_isolation())
        router = Router()

        @router.message(CommandStart())
        async def start(message: Message, dialog_manager: DialogManager) -> None:
            await dialog_manager.start(Wizard.first, mode=StartMode.RESET_STACK)

        router.include_router(
            Dialog(
                Window(Const("window one"), Next(Const("next"), id="next"), state=Wizard.first),
                Window(
                    Const("window two"),
                    SwitchTo(Const("back"), id="back", state=Wizard.first),
                    state=Wizard.second,
                ),
            )
        )
        self.dp.include_router(router)
        setup_dialogs(self.dp)
        self.api = DialogSession()
        self.bot = Bot(TOKEN, session=self.api)

    async def feed(self, update: Update) -> None:
        await self.dp.feed_update(self.bot, update)

    async def aclose(self) -> None:
        await self.bot.session.close()


_ids = itertools.count(1)


def callback_update(bot: Bot, message_id: int, data: str) -> Update:
    return Update.model_validate(
        {
            "update_id": 10_000 + next(_ids),
            "callback_query": {
                "id": f"cb{next(_ids)}",
                "chat_instance": "ci",
                "from": {"id": USER, "is_bot": False, "first_name": "User"},
                "data": data,
                "message": {
                    "message_id": message_id,
                    "date": datetime.datetime.now(datetime.UTC),
                    "chat": {"id": USER, "type": "private"},
                    "from": {"id": 42, "is_bot": True, "first_name": "Bot"},
                    "text": "window one",
                },
            },
        },
        context={"bot": bot},
    )


async def dialog_states(backend: BotBackend) -> list[str]:
    """The state of every dialog context stored, read back through a fresh AiogramStorage."""
    storage = await backend.open()
    fsm = AiogramStorage(storage, key_builder=DefaultKeyBuilder(with_destiny=True))
    states = []
    async for name in storage.keys():
        if ":aiogd:context:" in name and name.endswith(":data"):
            intent_id = name.split(":aiogd:context:")[1].removesuffix(":data")
            key = StorageKey(
                bot_id=42, chat_id=USER, user_id=USER, destiny=f"aiogd:context:{intent_id}"
            )
            states.append((await fsm.get_data(key))["state"])
    return states


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BotBackend]:
    url = (
        f"sqlite:///{tmp_path / 'bot.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("redis_url")
    )

    async def factory() -> BaseStorage:
        return storage_from_url(url)

    bot_backend = BotBackend(request.param, factory)
    try:
        yield bot_backend
    finally:
        await bot_backend.aclose()


async def test_dialog_survives_a_restart(backend: BotBackend) -> None:
    first = DialogBot(await backend.open())
    await first.feed(message_update(first.bot, USER, "/start"))
    sent = [p for name, p in first.api.calls if name == "SendMessage"]
    assert [p["text"] for p in sent] == ["window one"]
    (button,) = [b for row in sent[0]["reply_markup"]["inline_keyboard"] for b in row]
    assert button["text"] == "next"
    await first.aclose()

    # The context (current state) and the stack are in the storage, not in the process.
    assert await dialog_states(backend) == ["Wizard:first"]

    # "Restart": a new storage object over the same data, a new Dispatcher and dialog registry.
    second = DialogBot(await backend.open())
    message_id = 1000  # the first message RecordingSession hands out
    await second.feed(callback_update(second.bot, message_id, button["callback_data"]))
    edits = [p for name, p in second.api.calls if name == "EditMessageText"]
    assert [p["text"] for p in edits] == ["window two"]
    assert edits[0]["message_id"] == message_id
    assert "SendMessage" not in [name for name, _ in second.api.calls]
    assert await dialog_states(backend) == ["Wizard:second"]
    await second.aclose()
