"""A Telegram bot on aiogram + gramio-storage, played offline from a script.

The bot has a session counter (``/count``), a two-step registration form kept in aiogram's FSM
(``/register``), a profile (``/profile``) and a rate-limited ``/dice`` (3 a minute), all stored
through gramio-storage. The demo feeds it
scripted updates through aiogram's real Dispatcher, with a Bot whose HTTP session prints the
replies instead of calling Telegram, so it runs anywhere without a token or a network::

    python examples/bot_demo.py                      # SQLite file in the temp dir: run it twice
    python examples/bot_demo.py --storage memory://  # or redis://127.0.0.1:6379/0, postgresql://...
    python examples/bot_demo.py --reset              # forget everything first

The first run stops in the middle of the registration form; run it again (a new process) and the
bot picks up the conversation where it stopped, with the counter where it was.

The same bot runs for real with a token from @BotFather (long polling)::

    python examples/bot_demo.py --token 123456:ABC...
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import math
import os
import tempfile
import urllib.parse
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.base import BaseSession
from aiogram.filters import Command, CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.base import StorageKey
from aiogram.methods import TelegramMethod
from aiogram.types import Message, Update

from gramio_storage import BaseStorage, storage_from_url
from gramio_storage.aiogram import AiogramStorage, SessionMiddleware
from gramio_storage.ratelimit import RateLimit, RateLimiter, RateLimitResult
from gramio_storage.ratelimit.aiogram import RateLimitMiddleware
from gramio_storage.session import Session

DEFAULT_STORAGE = "sqlite:///" + str(Path(tempfile.gettempdir()) / "gramio-demo.db")
USER_ID = 100
USER_NAME = "Alice"

# What the scripted user sends. The first run stops in the middle of the registration form; the
# next run (a new process) answers the pending question, so the FSM state must have survived.
FIRST_RUN = ["/start", "/count", "/count", "/register", "Alice"]
RESUMED = ["/start", "thirty", "30", "/count", "/profile"]
LATER_RUNS = ["/start", "/count", "/profile"]
BURST = ["/dice"] * 5  # every run ends with a burst, which the rate limit answers
DICE = RateLimit(3, 60, id="dice")  # GramIO's layout: rl:dice:<user> = [ms timestamps]


# ---------------------------------------------------------------------------------- the bot


class Registration(StatesGroup):
    """The form's steps, kept in aiogram's FSM (so in the storage)."""

    name = State()
    age = State()


def new_session() -> dict[str, Any]:
    return {"count": 0}


router = Router()


@router.message(CommandStart())
async def start(message: Message, state: FSMContext, session: Session[dict[str, Any]]) -> None:
    profile = session.data.get("profile")
    if profile:
        await message.answer(f"Welcome back, {profile['name']} ({profile['age']})!")
    elif await state.get_state() == Registration.age.state:
        name = (await state.get_data())["name"]
        await message.answer(f"Welcome back, {name}! You were about to tell me your age.")
    else:
        await message.answer("Hi! I count your /count presses and remember a /register form.")


@router.message(Command("count"))
async def count(message: Message, session: Session[dict[str, Any]]) -> None:
    session.data["count"] += 1  # saved after the handler, once, because it changed
    n = session.data["count"]
    await message.answer(f"You pressed /count {n} time{'s' if n != 1 else ''}.")


@router.message(Command("register"))
async def register(message: Message, state: FSMContext) -> None:
    await state.set_state(Registration.name)
    await message.answer("What is your name?")


@router.message(Registration.name, F.text)
async def got_name(message: Message, state: FSMContext) -> None:
    await state.update_data(name=message.text)
    await state.set_state(Registration.age)
    await message.answer(f"How old are you, {message.text}?")


@router.message(Registration.age, F.text)
async def got_age(message: Message, state: FSMContext, session: Session[dict[str, Any]]) -> None:
    if not (message.text or "").isdigit():
        await message.answer("Please send your age as a number.")
        return  # still in Registration.age: the next message is the next try
    form = await state.update_data(age=int(message.text or 0))
    await state.clear()
    session.data["profile"] = {"name": form["name"], "age": form["age"]}
    await message.answer(f"Nice to meet you, {form['name']} ({form['age']})!")


@router.message(Command("profile"))
async def profile(message: Message, session: Session[dict[str, Any]]) -> None:
    p = session.data.get("profile")
    who = f"{p['name']}, {p['age']}" if p else "not registered yet (/register)"
    await message.answer(f"Profile: {who}. /count pressed {session.data['count']} times.")


def dice_router(storage: BaseStorage) -> Router:
    """``/dice``, limited by the rule in its flag; the limit lives in the storage too."""
    dice = Router()

    async def slow_down(message: Message, result: RateLimitResult) -> None:
        await message.answer(f"Slow down: try again in {math.ceil(result.retry_after)} s.")

    limiter = RateLimiter(storage, limit=DICE.limit, window=DICE.window)
    dice.message.middleware(RateLimitMiddleware(limiter, flagged_only=True, on_limit=slow_down))

    @dice.message(Command("dice"), flags={"rate_limit": DICE})
    async def roll(message: Message, rate_limit: RateLimitResult) -> None:
        rolled, left = 1 + message.message_id * 5 % 6, rate_limit.remaining
        await message.answer(f"You rolled a {rolled} ({left} more this minute).")

    return dice


def build_dispatcher(storage: BaseStorage) -> Dispatcher:
    """The whole integration: FSM, cross-process isolation, sessions, rate limit on one backend."""
    fsm = AiogramStorage(storage)
    dp = Dispatcher(storage=fsm, events_isolation=fsm.create_isolation())
    dp.update.outer_middleware(SessionMiddleware(storage, initial=new_session))
    dp.include_router(dice_router(storage))  # first: /dice is not an answer to the form
    dp.include_router(router)
    return dp


# ---------------------------------------------------------------------------------- offline


class TranscriptSession(BaseSession):
    """A Bot API session that prints what the bot sends instead of calling Telegram."""

    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[Any],
        timeout: int | None = None,  # noqa: ASYNC109 - aiogram's signature
    ) -> Any:
        params = method.model_dump(exclude_none=True)
        if method.__returning__ is not Message:
            return True
        print(f"  {'bot':>6} < {params['text']}")
        return Message.model_validate(
            {
                "message_id": next(self._ids),
                "date": datetime.datetime.now(datetime.UTC),
                "chat": {"id": params["chat_id"], "type": "private"},
                "text": params["text"],
            },
            context={"bot": bot},
        )

    async def stream_content(self, *args: Any, **kwargs: Any) -> AsyncGenerator[bytes, None]:
        raise NotImplementedError("the offline demo downloads nothing")
        yield b""  # pragma: no cover

    async def close(self) -> None:
        return None


def user_message(bot: Bot, update_id: int, text: str) -> Update:
    return Update.model_validate(
        {
            "update_id": update_id,
            "message": {
                "message_id": update_id,
                "date": datetime.datetime.now(datetime.UTC),
                "chat": {"id": USER_ID, "type": "private", "first_name": USER_NAME},
                "from": {"id": USER_ID, "is_bot": False, "first_name": USER_NAME},
                "text": text,
            },
        },
        context={"bot": bot},
    )


async def play(url: str, reset: bool) -> None:
    storage = storage_from_url(url)
    async with storage:
        if reset:
            await storage.clear("session:")
            await storage.clear("fsm:")
            await storage.clear("rl:")
        dp = build_dispatcher(storage)
        bot = Bot("1:OFFLINE-DEMO", session=TranscriptSession())
        key = StorageKey(bot_id=bot.id, chat_id=USER_ID, user_id=USER_ID)
        if not await storage.has(f"session:{USER_ID}"):
            script, note = FIRST_RUN, "first run"
        elif await AiogramStorage(storage).get_state(key) is not None:
            script, note = RESUMED, "a new process: the bot still waits for the form's answer"
        else:
            script, note = LATER_RUNS, "the bot remembers the earlier runs"
        print(f"storage: {_safe(url)} ({note})\n")
        for update_id, text in enumerate(script, start=1):
            print(f"  {USER_NAME:>6} > {text}")
            await dp.feed_update(bot, user_message(bot, update_id, text))
        print(f"\n  a burst: {DICE.limit} rolls a minute, counted in the storage for every process")
        for update_id, text in enumerate(BURST, start=len(script) + 1):
            print(f"  {USER_NAME:>6} > {text}")
            await dp.feed_update(bot, user_message(bot, update_id, text))

        print("\nstored, as compact JSON a GramIO bot on the same database can read:")
        shown = ("session:", "fsm:", "rl:")
        for name in sorted([k async for k in storage.keys() if k.startswith(shown)]):
            print(f"  {name} = {storage.codec.encode(await storage.get(name)).decode()}")
    print("\nRun it again: it continues where it stopped. `make demo-reset` forgets it all.")


def _safe(url: str) -> str:
    """The URL with any password masked, fit to print."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


async def run_for_real(url: str, token: str) -> None:
    storage = storage_from_url(url)
    async with storage:
        dp = build_dispatcher(storage)
        bot = Bot(token)
        print(f"polling with storage {_safe(url)}; Ctrl+C to stop")
        await dp.start_polling(bot)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--storage",
        default=os.environ.get("GRAMIO_DEMO_STORAGE", DEFAULT_STORAGE),
        help="storage URL (default: $GRAMIO_DEMO_STORAGE or a SQLite file in the temp dir)",
    )
    parser.add_argument("--reset", action="store_true", help="forget earlier runs first")
    # Explicit only: `make demo` must stay offline even where a token is in the environment.
    parser.add_argument("--token", help="run the same bot for real with this bot token")
    args = parser.parse_args(argv)
    if args.token:
        asyncio.run(run_for_real(args.storage, args.token))
    else:
        asyncio.run(play(args.storage, args.reset))


if __name__ == "__main__":
    main()
