"""Updates per second through aiogram's Dispatcher: FSM + session on gramio-storage vs aiogram.

Every contender runs the same bot through aiogram's real ``Dispatcher.feed_update``, with a Bot
whose HTTP session counts the replies instead of sending them (no network, as in
``tests/test_aiogram.py``). The handler is what a form step does: read the FSM state, merge a
field into the FSM data, move to the next state, bump a counter in the session and reply.
Updates cycle over 1,000 users and are awaited one at a time.

Contenders, all in the same process:

* **aiogram** ``MemoryStorage``: the baseline. Its "session" is what an aiogram bot writes by
  hand: a middleware keeping a dict in the FSM storage under ``destiny="session"``
  (``get_data`` before the handler, ``set_data`` after it if the dict changed), so the baseline
  makes the same storage calls as our ``SessionMiddleware``, minus our storage.
* ``AiogramStorage(MemoryStorage())``: ours in memory, encoded (JSON, the default);
  ``MemoryStorage(codec=None)`` (references, like aiogram's) is shown as well.
* ``AiogramStorage(SQLiteStorage(<temp file>))``: ours on disk.

Each runs with the session middleware and without it (FSM only; the handler then skips the
counter). ``--isolation`` adds rows with event isolation: aiogram's in-process
``SimpleEventIsolation`` against our storage-backed ``StorageEventIsolation``.

Rounds are short and interleaved (the order flips every round), and each figure is the best
round, in wall time and in process CPU time; on a shared machine the CPU figure is the steadier.
A per-call table follows: microseconds per FSM storage call, where the difference comes from.

The handler has no magic filter: aiogram 3 runs a synchronous filter such as ``F.text`` through
``asyncio.to_thread``, a thread hop per update that would add the same large, noisy cost to
every contender.

Run: ``.venv/bin/python bench/bench_bot.py [--n 1000] [--rounds 40] [--isolation]``.
``--only TEXT`` keeps the contenders whose name contains TEXT (plus their baselines);
``--profile NAME`` runs one contender under cProfile instead.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import platform
import pstats
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from aiogram import Bot, Dispatcher, Router
from aiogram import __version__ as aiogram_version
from aiogram.client.session.base import BaseSession
from aiogram.dispatcher.middlewares.base import BaseMiddleware
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.base import BaseStorage as AiogramBaseStorage
from aiogram.fsm.storage.base import StorageKey
from aiogram.fsm.storage.memory import MemoryStorage as AiogramMemoryStorage
from aiogram.fsm.storage.memory import SimpleEventIsolation
from aiogram.methods import TelegramMethod
from aiogram.types import Message, TelegramObject, Update

from gramio_storage import BaseStorage, MemoryStorage
from gramio_storage.aiogram import AiogramStorage, SessionMiddleware
from gramio_storage.sqlite import SQLiteStorage

USERS = 1_000
TOKEN = "42:BENCH-TOKEN"  # noqa: S105 - a made-up token; nothing is sent anywhere

# ---------------------------------------------------------------------------------- the bot


class Form(StatesGroup):
    name = State()
    age = State()
    city = State()


NEXT = {None: Form.name, Form.name.state: Form.age, Form.age.state: Form.city}


def new_session() -> dict[str, Any]:
    return {"count": 0}


def make_router(with_session: bool) -> Router:
    router = Router()
    if with_session:

        @router.message()
        async def step_with_session(message: Message, state: FSMContext, session: Any) -> None:
            current = await state.get_state()
            await state.update_data(last=message.text)
            await state.set_state(NEXT.get(current, Form.name))
            session.data["count"] += 1
            await message.answer(f"step {current}, count {session.data['count']}")

    else:

        @router.message()
        async def step(message: Message, state: FSMContext) -> None:
            current = await state.get_state()
            await state.update_data(last=message.text)
            await state.set_state(NEXT.get(current, Form.name))
            await message.answer(f"step {current}")

    return router


class DictSession:
    """The baseline's session object: the same ``session.data`` interface as ours."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data


class AiogramDataSession(BaseMiddleware):
    """A session kept in aiogram's own FSM storage, the way aiogram bots do it by hand."""

    def __init__(self, storage: AiogramMemoryStorage) -> None:
        self.storage = storage

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        user = data["event_from_user"]
        key = StorageKey(bot_id=data["bot"].id, chat_id=user.id, user_id=user.id, destiny="session")
        session, before = await self.load(key)
        data["session"] = session
        result = await handler(event, data)
        await self.save(key, session, before)
        return result

    async def load(self, key: StorageKey) -> tuple[DictSession, dict[str, Any]]:
        session = DictSession(await self.storage.get_data(key) or new_session())  # a copy
        return session, dict(session.data)

    async def save(self, key: StorageKey, session: DictSession, before: dict[str, Any]) -> None:
        if session.data != before:
            await self.storage.set_data(key, session.data)


# ---------------------------------------------------------------------------------- offline


class CountingSession(BaseSession):
    """A Bot API session that counts calls and answers with a ready Message (no network)."""

    def __init__(self, reply: Message) -> None:
        super().__init__()
        self.calls = 0
        self._reply = reply

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[Any],
        timeout: int | None = None,  # noqa: ASYNC109 - aiogram's signature
    ) -> Any:
        self.calls += 1
        return self._reply

    async def stream_content(self, *args: Any, **kwargs: Any) -> AsyncGenerator[bytes, None]:
        raise NotImplementedError
        yield b""  # pragma: no cover

    async def close(self) -> None:
        return None


def make_bot() -> tuple[Bot, CountingSession]:
    now = datetime.datetime.now(datetime.UTC)
    reply = Message.model_validate(
        {"message_id": 1, "date": now, "chat": {"id": 1, "type": "private"}, "text": "ok"}
    )
    session = CountingSession(reply)
    return Bot(TOKEN, session=session), session


def make_updates(bot: Bot, n: int) -> list[Update]:
    now = datetime.datetime.now(datetime.UTC)
    return [
        Update.model_validate(
            {
                "update_id": i,
                "message": {
                    "message_id": i,
                    "date": now,
                    "chat": {"id": 1 + i % USERS, "type": "private"},
                    "from": {"id": 1 + i % USERS, "is_bot": False, "first_name": "User"},
                    "text": f"answer {i}",
                },
            },
            context={"bot": bot},  # mounted on the bot: feed_update does not re-validate it
        )
        for i in range(n)
    ]


# ---------------------------------------------------------------------------------- contenders


class Contender:
    def __init__(self, backend: str, kind: str, dp: Dispatcher) -> None:
        self.name, self.kind, self.dp = f"{backend} {kind}", kind, dp
        self.wall = self.cpu = float("inf")


def aiogram_dispatcher(with_session: bool, isolation: bool) -> Dispatcher:
    storage = AiogramMemoryStorage()
    dp = Dispatcher(storage=storage, events_isolation=SimpleEventIsolation() if isolation else None)
    if with_session:
        dp.update.outer_middleware(AiogramDataSession(storage))
    dp.include_router(make_router(with_session))
    return dp


def our_dispatcher(storage: BaseStorage, with_session: bool, isolation: bool) -> Dispatcher:
    fsm = AiogramStorage(storage)
    dp = Dispatcher(storage=fsm, events_isolation=fsm.create_isolation() if isolation else None)
    if with_session:
        dp.update.outer_middleware(SessionMiddleware(storage, initial=new_session))
    dp.include_router(make_router(with_session))
    return dp


async def contenders(stack: AsyncExitStack, isolation: bool) -> list[Contender]:
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-bot-")))
    out: list[Contender] = []
    for iso in (False, True) if isolation else (False,):
        suffix = " +isolation" if iso else ""
        for with_session in (False, True):
            kind = ("+session" if with_session else "FSM only") + suffix
            backends: list[tuple[str, BaseStorage]] = [
                ("ours memory", MemoryStorage()),
                ("ours memory ref", MemoryStorage(codec=None)),
                ("ours sqlite", SQLiteStorage(tmp / f"bot-{kind.replace(' ', '_')}.db")),
            ]
            out.append(Contender("aiogram memory", kind, aiogram_dispatcher(with_session, iso)))
            for label, storage in backends:
                await stack.enter_async_context(storage)
                out.append(Contender(label, kind, our_dispatcher(storage, with_session, iso)))
    return out


async def run_round(
    c: Contender, bot: Bot, counter: CountingSession, updates: list[Update]
) -> tuple[float, float]:
    """Feed every update once; return (wall, CPU) seconds."""
    feed = c.dp.feed_update
    counter.calls = 0
    cpu = time.process_time()
    wall = time.perf_counter()
    for update in updates:
        await feed(bot, update)
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    # A handler that stopped matching would make a contender look fast: every update must reply.
    if counter.calls != len(updates):
        raise SystemExit(f"{c.name}: {counter.calls} replies for {len(updates)} updates")
    return wall, cpu


# ---------------------------------------------------------------------------------- per call

Op = Callable[[int], Awaitable[Any]]


def storage_ops(fsm: AiogramBaseStorage, session: Op) -> dict[str, Op]:
    """The storage calls one update makes, one by one, cycling over the users."""
    keys = [StorageKey(bot_id=42, chat_id=1 + i, user_id=1 + i) for i in range(USERS)]
    # Users outside a form: most of a bot's updates read a state that is not there.
    strangers = [StorageKey(bot_id=42, chat_id=-1 - i, user_id=-1 - i) for i in range(USERS)]

    async def get_state(i: int) -> Any:
        return await fsm.get_state(keys[i % USERS])

    async def get_no_state(i: int) -> Any:
        return await fsm.get_state(strangers[i % USERS])

    async def set_state(i: int) -> Any:
        return await fsm.set_state(keys[i % USERS], Form.age if i & 1 else Form.city)

    async def update_data(i: int) -> Any:
        return await fsm.update_data(keys[i % USERS], {"last": i})

    return {
        "get_state": get_state,
        "set_state": set_state,
        "update_data": update_data,
        "session": session,
        "no state": get_no_state,
    }


def aiogram_session_op(storage: AiogramMemoryStorage) -> Op:
    middleware = AiogramDataSession(storage)
    keys = [
        StorageKey(bot_id=42, chat_id=1 + i, user_id=1 + i, destiny="session") for i in range(USERS)
    ]

    async def session(i: int) -> None:
        key = keys[i % USERS]
        s, before = await middleware.load(key)
        s.data["count"] += 1
        await middleware.save(key, s, before)

    return session


def our_session_op(storage: BaseStorage) -> Op:
    manager = SessionMiddleware(storage, initial=new_session).manager

    async def session(i: int) -> None:
        s = manager.session(1 + i % USERS)  # what SessionMiddleware does around the handler
        await s.load()
        s.data["count"] += 1
        await s.save()

    return session


async def per_call(stack: AsyncExitStack, n: int, rounds: int) -> None:
    """Microseconds per storage call: where the difference per update comes from."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-bot-ops-")))
    aiogram_memory = AiogramMemoryStorage()
    rows: dict[str, dict[str, Op]] = {
        "aiogram memory": storage_ops(aiogram_memory, aiogram_session_op(aiogram_memory))
    }
    for label, storage in (
        ("ours memory", MemoryStorage()),
        ("ours memory ref", MemoryStorage(codec=None)),
        ("ours sqlite", SQLiteStorage(tmp / "ops.db")),
    ):
        await stack.enter_async_context(storage)
        rows[label] = storage_ops(AiogramStorage(storage), our_session_op(storage))
    results: dict[str, dict[str, float]] = {}
    for label, ops in rows.items():
        count = n // 20 if "sqlite" in label else n  # ~20x slower; per-call time stays fair
        results[label] = {}
        for op in ops.values():  # warm up: every user has a state, data and a session
            for i in range(USERS):
                await op(i)
        for name, op in ops.items():
            best = float("inf")
            for _ in range(rounds):
                start = time.perf_counter()
                for i in range(count):
                    await op(i)
                best = min(best, time.perf_counter() - start)
            results[label][name] = best / count * 1e6

    names = list(rows["aiogram memory"])
    print(
        "\nper storage call, us; an update makes 2 get_state (aiogram's FSM middleware and the "
        "handler), 1 set_state, 1 update_data and, with the middleware, 1 session load+save;\n"
        "'no state' is get_state for a user outside any form (not in the per-update sum):"
    )
    print(f"{'':16}" + "".join(f"{name:>13}" for name in names) + f"{'per update':>13}")
    for label, row in results.items():
        total = 2 * row["get_state"] + row["update_data"] + row["set_state"] + row["session"]
        print(f"{label:16}" + "".join(f"{row[name]:>13.2f}" for name in names) + f"{total:>13.2f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=USERS, help="updates per round")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--isolation", action="store_true", help="add event-isolation rows")
    parser.add_argument(
        "--only", metavar="TEXT", help="measure only contenders whose name contains TEXT"
    )
    parser.add_argument("--profile", metavar="NAME", help="profile this contender instead")
    parser.add_argument("--no-calls", action="store_true", help="skip the per-call table")
    args = parser.parse_args()

    bot, counter = make_bot()
    updates = make_updates(bot, args.n)
    async with AsyncExitStack() as stack:
        field = await contenders(stack, args.isolation or bool(args.profile))
        if args.only:  # the baselines of the kinds kept stay in, to compute ratios
            kinds = {c.kind for c in field if args.only in c.name}
            field = [
                c
                for c in field
                if c.kind in kinds and (args.only in c.name or c.name.startswith("aiogram"))
            ]
        for c in field:  # warm up: first-use caches, SQLite tables, every user's first update
            await run_round(c, bot, counter, updates[:USERS])

        if args.profile:
            chosen = [c for c in field if c.name == args.profile]
            if not chosen:
                raise SystemExit(f"no contender {args.profile!r}: {[c.name for c in field]}")
            profiler = cProfile.Profile()
            profiler.enable()
            await run_round(chosen[0], bot, counter, updates)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            return

        for r in range(args.rounds):
            for c in field if r % 2 else field[::-1]:  # alternate: no contender always first
                wall, cpu = await run_round(c, bot, counter, updates)
                c.wall, c.cpu = min(c.wall, wall), min(c.cpu, cpu)
        report(args, field)
        if not args.no_calls:
            await per_call(stack, 10_000, 15)


def report(args: argparse.Namespace, field: list[Contender]) -> None:
    print(
        f"Python {platform.python_version()}, aiogram {aiogram_version}, {platform.machine()}; "
        f"{args.n} updates per round, best of {args.rounds} rounds, {USERS} users\n"
    )
    print(
        f"{'contender':36} {'updates/s':>10} {'us/update':>10} {'vs aiogram':>10}"
        f" {'CPU us/upd':>11} {'CPU ratio':>10}"
    )
    baselines = {c.kind: c for c in field if c.name.startswith("aiogram")}
    for c in field:
        base = baselines[c.kind]
        print(
            f"{c.name:36} {args.n / c.wall:>10,.0f} {c.wall / args.n * 1e6:>10.1f}"
            f" {base.wall / c.wall:>9.2f}x {c.cpu / args.n * 1e6:>11.1f} {base.cpu / c.cpu:>9.2f}x"
        )
    print(
        "\nvs aiogram: our updates/s over aiogram MemoryStorage's, same handler and middleware"
        " stack.\nCPU: the same from process CPU time, which other processes' load inflates less."
    )


if __name__ == "__main__":
    if sys.version_info < (3, 11):
        raise SystemExit("Python 3.11+ required")
    asyncio.run(main())
