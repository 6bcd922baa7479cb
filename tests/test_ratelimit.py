"""Rate limiting: GramIO's sliding window made atomic, the fixed window, and the bot adapters.

Windows move under a fake clock (no sleeping); the cross-process checks run 4 real processes
against one SQLite file, Redis server or PostgreSQL server; aiogram, python-telegram-bot and
telebot run their real dispatchers offline.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import math
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiogram import Bot, Dispatcher, Router, flags
from aiogram.filters import Command
from aiogram.types import Message, Update
from telebot import TeleBot
from telebot import types as tb
from telebot.async_telebot import AsyncTeleBot
from telegram import Update as PTBUpdate
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from _bot_backends import *  # noqa: F403  (the `backend` fixture and the server fixtures)
from _bot_backends import BotBackend
from _pg_server import postgres_dsn  # noqa: F401  (fixtures of the cross-process tests)
from _ptb_offline import RecordingRequest, message
from _redis_server import redis_server_session, redis_url  # noqa: F401
from gramio_storage import (
    ConfigurationError,
    InvalidKeyError,
    InvalidTTLError,
    MemoryStorage,
    UnsupportedOperationError,
    storage_from_url,
)
from gramio_storage.ratelimit import RateLimit, RateLimiter, RateLimitResult
from gramio_storage.ratelimit.aiogram import RateLimitMiddleware, sender_or_chat
from gramio_storage.ratelimit.telebot import AsyncRateLimitMiddleware
from gramio_storage.ratelimit.telebot import RateLimitMiddleware as SyncRateLimitMiddleware
from gramio_storage.ratelimit.telegram import effective_sender, rate_limited
from gramio_storage.telebot import TeleBotStorage

T0 = 1_700_000_040.0  # a whole minute: fixed 60-second windows start here
W0 = int(T0 * 1000) // 60_000  # the number of the fixed window starting at T0


class FakeClock:
    """Seconds since the epoch that move only when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @property
    def ms(self) -> int:
        return math.floor(self.now * 1000)


async def allowed(
    limiter: RateLimiter, who: Any, n: int, rule: RateLimit | None = None
) -> list[bool]:
    return [(await limiter.hit(who, rule)).allowed for _ in range(n)]


# ------------------------------------------------------------------ the sliding window


async def test_the_sliding_window_admits_limit_requests_and_slides(backend: BotBackend) -> None:
    """3 per 60 s: the 4th waits for the oldest to leave; refused requests are not recorded."""
    clock = FakeClock()
    limiter = RateLimiter(await backend.open(), limit=3, window=60, clock=clock)
    first = await limiter.hit(42)
    assert first == RateLimitResult(True, 1, 3, 0.0, "rl:default:42")
    assert first.remaining == 2 and bool(first) is True
    clock.advance(10)
    assert await allowed(limiter, 42, 2) == [True, True]  # at 10 s: stamps 0, 10, 10
    refused = await limiter.hit(42)
    assert not refused and refused.count == 3 and refused.remaining == 0
    assert refused.retry_after == pytest.approx(50.0)  # until the stamp of 0 s leaves
    clock.advance(49.999)
    assert (await limiter.hit(42)).retry_after == pytest.approx(0.001)
    clock.advance(0.001)  # 60 s after the first request: it has left the window
    assert (await limiter.hit(42)).allowed
    assert (await limiter.hit(42)).retry_after == pytest.approx(10.0)  # now the 10 s ones
    clock.advance(10)
    assert await allowed(limiter, 42, 3) == [True, True, False]


async def test_the_key_and_value_are_gramios_layout(backend: BotBackend) -> None:
    """rl:<id>:<user> holds a JSON array of the admitted requests' millisecond timestamps."""
    clock = FakeClock()
    storage = await backend.open()
    limiter = RateLimiter(storage, limit=2, window=60, clock=clock)
    pay = RateLimit(1, 30, id="pay")
    await limiter.hit(42)
    clock.advance(1.5)
    await limiter.hit(42)
    await limiter.hit(42)  # refused: not recorded
    await limiter.hit("alice", pay)
    assert await storage.get("rl:default:42") == [clock.ms - 1500, clock.ms]
    assert await storage.get("rl:pay:alice") == [clock.ms]
    assert sorted([k async for k in storage.keys("rl:")]) == ["rl:default:42", "rl:pay:alice"]
    assert limiter.key(42) == "rl:default:42" and limiter.key(7, pay) == "rl:pay:7"
    left = await storage.ttl("rl:default:42")  # expires a window after the last write
    assert left is not None and 0 < left <= 60


def gramio_check_sliding_window(
    value: Any, limit: int, window_ms: int, now: int
) -> tuple[bool, list[int] | None]:
    """GramIO's checkSlidingWindow, line by line: (allowed, the array it would store or None)."""
    timestamps = value if isinstance(value, list) else []
    valid = [t for t in timestamps if now - t < window_ms]
    if len(valid) >= limit:
        return False, None
    valid.append(now)
    return True, valid


async def test_a_gramio_bot_and_a_python_bot_share_one_limit(backend: BotBackend) -> None:
    """Alternating GramIO's algorithm and ours on one key admits `limit` in total, no more."""
    clock = FakeClock()
    storage = await backend.open()
    limiter = RateLimiter(storage, limit=5, window=60, clock=clock)
    admitted = 0
    for i in range(12):
        clock.advance(0.25)
        if i % 2:  # the GramIO bot
            ok, stored = gramio_check_sliding_window(
                await storage.get("rl:default:9"), 5, 60_000, clock.ms
            )
            if stored is not None:
                await storage.set("rl:default:9", stored)
        else:
            ok = (await limiter.hit(9)).allowed
        admitted += ok
    assert admitted == 5
    assert len(await storage.get("rl:default:9")) == 5
    # GramIO's own reading of what we stored agrees that the window is full.
    assert (
        gramio_check_sliding_window(await storage.get("rl:default:9"), 5, 60_000, clock.ms)[0]
        is False
    )


async def test_a_value_that_is_not_an_array_of_numbers_is_started_over() -> None:
    """As GramIO: anything but an array counts as empty; non-numbers in it are dropped."""
    clock = FakeClock()
    storage = MemoryStorage()
    limiter = RateLimiter(storage, limit=2, window=60, clock=clock)
    await storage.set("rl:default:1", {"not": "an array"})
    await storage.set("rl:default:2", ["x", None, True, clock.ms - 1000])
    assert (await limiter.hit(1)).count == 1
    assert await storage.get("rl:default:1") == [clock.ms]
    assert await allowed(limiter, 2, 2) == [True, False]  # the one real stamp counted
    assert await storage.get("rl:default:2") == [clock.ms - 1000, clock.ms]


async def test_a_refused_request_writes_nothing(backend: BotBackend) -> None:
    """The stored array is left exactly as it was (its expired stamp is not even pruned)."""
    clock = FakeClock()
    storage = await backend.open()
    limiter = RateLimiter(storage, limit=3, window=60, clock=clock)
    stored = [clock.ms - 90_000, clock.ms - 3, clock.ms - 2, clock.ms - 1]  # as GramIO left it
    await storage.set("rl:default:8", stored)
    refused = await limiter.hit(8)
    assert not refused and refused.count == 3
    assert await storage.get("rl:default:8") == stored
    assert await storage.ttl("rl:default:8") is None  # not rewritten with the limiter's TTL
    clock.advance(60)
    assert (await limiter.hit(8)).allowed
    assert await storage.get("rl:default:8") == [clock.ms]


async def test_peek_does_not_count_and_reset_forgets(backend: BotBackend) -> None:
    clock = FakeClock()
    limiter = RateLimiter(await backend.open(), limit=2, window=60, clock=clock)
    assert (await limiter.peek(5)).count == 0
    await limiter.hit(5)
    assert [(await limiter.peek(5)).count for _ in range(3)] == [1, 1, 1]
    await limiter.hit(5)
    peeked = await limiter.peek(5)
    assert not peeked.allowed and peeked.retry_after == pytest.approx(60.0)
    assert await limiter.reset(5) is True
    assert await limiter.reset(5) is False
    assert (await limiter.hit(5)).count == 1


async def test_concurrent_hits_admit_exactly_the_limit(backend: BotBackend) -> None:
    """200 hits at once through two storage objects, limit 50: exactly 50 pass."""
    if not backend.atomic:
        pytest.skip("Cloudflare KV has no atomic update: GramIO's read-then-write can over-admit")
    clock = FakeClock()
    one = RateLimiter(await backend.open(), limit=50, window=60, clock=clock)
    two = RateLimiter(await backend.open(), limit=50, window=60, clock=clock)
    results = await asyncio.gather(*((one if i % 2 else two).hit(3) for i in range(200)))
    assert sum(r.allowed for r in results) == 50
    assert max(r.count for r in results) == 50


# ------------------------------------------------------------------ the fixed window


async def test_the_fixed_window_counts_with_incr_per_clock_slice(backend: BotBackend) -> None:
    """3 per 60 s in fixed slices of the clock: the counter resets at the slice boundary."""
    clock = FakeClock()
    storage = await backend.open()
    limiter = RateLimiter(storage, limit=3, window=60, mode="fixed", clock=clock)
    if not backend.atomic:
        with pytest.raises(UnsupportedOperationError):
            await limiter.hit(1)
        return
    assert await allowed(limiter, 1, 4) == [True, True, True, False]
    clock.advance(59.999)
    refused = await limiter.hit(1)
    assert refused.count == 5 and refused.retry_after == pytest.approx(0.001)
    assert refused.key == f"rl:default:1:{W0}"
    assert await storage.get(f"rl:default:1:{W0}") == 5  # a plain counter, refused ones too
    left = await storage.ttl(f"rl:default:1:{W0}")
    assert left is not None and 0 < left <= 60
    clock.advance(0.001)  # the next slice
    assert await allowed(limiter, 1, 4) == [True, True, True, False]
    assert (await limiter.peek(1)).count == 4
    assert limiter.key(1) == f"rl:default:1:{W0 + 1}"
    # The known cost of fixed windows: 2 x limit around a boundary, which sliding prevents.
    clock.advance(59.999)
    assert await allowed(limiter, 2, 3) == [True] * 3
    clock.advance(0.001)
    assert await allowed(limiter, 2, 3) == [True] * 3


# ------------------------------------------------------------------ across processes

CHILD = """
import asyncio, json, sys
from gramio_storage import storage_from_url
from gramio_storage.ratelimit import RateLimiter

async def main(url, prefix, mode, count, now):
    storage = storage_from_url(url)
    try:
        limiter = RateLimiter(storage.with_prefix(prefix), limit=100, window=3600, mode=mode,
                              clock=lambda: now)
        await storage.has(prefix + "warm-up")  # connected before the start signal
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # the parent says go to all at once
        admitted = 0
        for _ in range(count):
            admitted += (await limiter.hit(42)).allowed
            await asyncio.sleep(0)
        print(json.dumps({"admitted": admitted}), flush=True)
    finally:
        await storage.close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])))
"""


async def run_processes(
    url: str, prefix: str, mode: str, processes: int = 4, hits: int = 250
) -> int:
    """``processes`` children doing ``hits`` checks each at the same moment; total admitted."""
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            url,
            prefix,
            mode,
            str(hits),
            str(T0),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), timeout=60)
            assert line == b"ready\n", (line, await child.stderr.read() if child.stderr else b"")
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        outputs = await asyncio.wait_for(
            asyncio.gather(*(child.communicate() for child in children)), timeout=120
        )
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
    codes = [child.returncode for child in children]
    assert codes == [0] * processes, [err.decode()[-2000:] for _, err in outputs]
    return sum(json.loads(out)["admitted"] for out, _ in outputs)


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A backend that several processes share."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'limits.db'}"
    fixture = {"redis": "redis_url", "postgres": "postgres_dsn"}[request.param]
    return str(request.getfixturevalue(fixture))


@pytest.mark.parametrize("mode", ["sliding", "fixed"])
async def test_four_processes_of_250_requests_admit_exactly_100(shared_url: str, mode: str) -> None:
    """4 processes x 250 checks against a limit of 100 admit exactly 100 (GramIO's would not)."""
    prefix = f"mp{uuid.uuid4().hex[:8]}:"
    storage = storage_from_url(shared_url)
    try:
        await storage.set(prefix + "created", True)  # the SQLite table exists before the race
        assert await run_processes(shared_url, prefix, mode) == 100
        view = storage.with_prefix(prefix)
        if mode == "sliding":
            assert len(await view.get("rl:default:42")) == 100
        else:
            assert await view.get(f"rl:default:42:{int(T0 * 1000) // 3_600_000}") == 1000
    finally:
        await storage.with_prefix(prefix).clear()
        await storage.close()


# ------------------------------------------------------------------ arguments


def test_rules_and_limiters_reject_bad_arguments_with_typed_errors() -> None:
    for limit in (0, -1, 1.5, True, "3", None):
        with pytest.raises(ConfigurationError, match="limit"):
            RateLimit(limit, 60)  # type: ignore[arg-type]
    for window in (0, -1, 0.0004, math.nan, math.inf, "60", True, None):
        with pytest.raises(InvalidTTLError, match="window"):
            RateLimit(3, window)  # type: ignore[arg-type]
    for kwargs in ({"id": ""}, {"id": 5}, {"mode": "token-bucket"}):
        with pytest.raises(ConfigurationError):
            RateLimit(3, 60, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="BaseStorage"):
        RateLimiter({}, limit=1, window=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="clock"):
        RateLimiter(limit=1, window=1, clock=123)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Unknown"):
        RateLimit.from_options({"limit": 1, "burst": 2}, RateLimit(1, 1))
    rule = RateLimit(3, datetime.timedelta(minutes=1), id="pay", mode="fixed")
    assert rule == RateLimit(3, 60.0, id="pay", mode="fixed") and hash(rule) == hash(
        RateLimit(3, 60, id="pay", mode="fixed")
    )
    assert rule.window == 60.0 and rule.window_ms == 60_000
    with pytest.raises(AttributeError):
        rule.limit = 4  # type: ignore[misc]
    assert RateLimit.from_options({"limit": 1}, rule) == RateLimit(1, 60, mode="fixed")


async def test_bad_checks_are_typed_errors() -> None:
    limiter = RateLimiter(limit=1, window=1)  # a private MemoryStorage
    assert isinstance(limiter.storage, MemoryStorage)
    for who in (None, "", 1.5, True, b"42"):
        with pytest.raises(InvalidKeyError):
            await limiter.hit(who)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="RateLimit"):
        await limiter.hit(1, {"limit": 1})  # type: ignore[arg-type]
    broken = RateLimiter(limit=1, window=1, clock=lambda: math.nan)
    with pytest.raises(ConfigurationError, match="clock"):
        await broken.hit(1)
    assert (await RateLimiter(limit=1, window=1).hit(1)).allowed  # real clock by default
    assert abs(RateLimiter(limit=1, window=1).clock() - time.time()) < 5


# ------------------------------------------------------------------ aiogram

TOKEN = "42:TEST-TOKEN"
_update_ids = itertools.count(1)


def aiogram_message(bot: Bot, user_id: int, text: str) -> Update:
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
                **(
                    {
                        "entities": [
                            {"type": "bot_command", "offset": 0, "length": len(text.split()[0])}
                        ]
                    }
                    if text.startswith("/")
                    else {}
                ),
            },
        },
        context={"bot": bot},
    )


def aiogram_bot(limiter: RateLimiter, seen: list[Any], **options: Any) -> Dispatcher:
    router = Router()
    router.message.middleware(
        RateLimitMiddleware(
            limiter, on_limit=lambda event, result: seen.append(("refused", event.text)), **options
        )
    )

    async def pay_refused(event: Message, result: RateLimitResult) -> None:
        seen.append(("pay refused", round(result.retry_after)))

    @router.message(
        Command("pay"),
        flags={"rate_limit": {"limit": 1, "window": 30, "id": "pay", "on_limit": pay_refused}},
    )
    async def pay(message: Message, rate_limit: RateLimitResult) -> None:
        seen.append(("pay", rate_limit.remaining))

    @router.message(Command("help"), flags={"rate_limit": False})
    async def help_(message: Message) -> None:
        seen.append(("help",))

    @router.message(Command("vip"))
    @flags.rate_limit(RateLimit(4, 60, id="vip"))
    async def vip(message: Message) -> None:
        seen.append(("vip",))

    @router.message()
    async def echo(message: Message) -> None:
        seen.append(("echo", message.text))

    dp = Dispatcher()
    dp.include_router(router)
    return dp


async def test_the_aiogram_middleware_reads_each_handlers_flag() -> None:
    clock = FakeClock()
    storage = MemoryStorage()
    limiter = RateLimiter(storage, limit=2, window=60, clock=clock)
    seen: list[Any] = []
    dp = aiogram_bot(limiter, seen)
    bot = Bot(TOKEN)
    for text in ["/pay", "/pay", "/help", "/help", "/help", "hi", "hi", "hi", *["/vip"] * 5]:
        await dp.feed_update(bot, aiogram_message(bot, 42, text))
    assert seen == [
        ("pay", 0),
        ("pay refused", 30),
        ("help",),
        ("help",),
        ("help",),
        ("echo", "hi"),
        ("echo", "hi"),
        ("refused", "hi"),
        *[("vip",)] * 4,
        ("refused", "/vip"),
    ]
    assert sorted([k async for k in storage.keys("rl:")]) == [
        "rl:default:42",
        "rl:pay:42",
        "rl:vip:42",
    ]
    clock.advance(30)  # the pay window has passed, the default one has not
    seen.clear()
    for text in ["/pay", "hi"]:
        await dp.feed_update(bot, aiogram_message(bot, 42, text))
    await dp.feed_update(bot, aiogram_message(bot, 7, "hi"))  # another user: own counter
    assert seen == [("pay", 0), ("refused", "hi"), ("echo", "hi")]
    await bot.session.close()


async def test_the_aiogram_middleware_can_limit_only_flagged_handlers() -> None:
    limiter = RateLimiter(MemoryStorage(), limit=1, window=60, clock=FakeClock())
    seen: list[Any] = []
    dp = aiogram_bot(limiter, seen, flagged_only=True)
    bot = Bot(TOKEN)
    for text in ["hi", "hi", "hi", "/pay", "/pay"]:
        await dp.feed_update(bot, aiogram_message(bot, 1, text))
    assert seen == [("echo", "hi")] * 3 + [("pay", 0), ("pay refused", 30)]
    await bot.session.close()


def test_aiogram_adapter_arguments_and_the_default_key() -> None:
    limiter = RateLimiter(limit=1, window=1)
    with pytest.raises(ConfigurationError):
        RateLimitMiddleware(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        RateLimitMiddleware(limiter, on_limit="reply")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        RateLimitMiddleware(limiter, flag="")
    middleware = RateLimitMiddleware(limiter)
    with pytest.raises(ConfigurationError, match="flag"):
        middleware._rule("3 per minute")
    with pytest.raises(ConfigurationError, match="Unknown"):
        middleware._rule({"limt": 3})
    user, chat = SimpleNamespace(id=5), SimpleNamespace(id=-100)
    assert sender_or_chat(None, {"event_from_user": user, "event_chat": chat}) == 5  # type: ignore[arg-type]
    assert sender_or_chat(None, {"event_chat": chat}) == -100  # type: ignore[arg-type]
    assert sender_or_chat(None, {}) is None  # type: ignore[arg-type]


# ------------------------------------------------------------------ python-telegram-bot


async def test_the_ptb_wrapper_limits_one_handler_and_answers_the_refusal() -> None:
    clock = FakeClock()
    limiter = RateLimiter(MemoryStorage(), limit=5, window=60, clock=clock)
    request = RecordingRequest()
    app = (
        Application.builder()
        .token("123:abc")
        .request(request)
        .get_updates_request(RecordingRequest())
        .build()
    )

    async def pay(update: PTBUpdate, context: ContextTypes.DEFAULT_TYPE) -> str:
        assert update.effective_message is not None
        await update.effective_message.reply_text("paid")
        return "done"

    async def too_fast(update: PTBUpdate, context: Any, result: RateLimitResult) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(f"wait {result.retry_after:.0f} s")

    limited = rate_limited(limiter, RateLimit(2, 60, id="pay"), on_limit=too_fast)(pay)
    assert limited.__name__ == "pay"  # functools.wraps
    app.add_handler(CommandHandler("pay", limited))
    async with app:
        for _ in range(3):
            await app.process_update(message(app, 1, "/pay"))
        clock.advance(60)
        await app.process_update(message(app, 1, "/pay"))
    assert request.texts() == ["paid", "paid", "wait 60 s", "paid"]
    assert await limiter.storage.get("rl:pay:1") == [int(T0 * 1000) + 60_000]
    with pytest.raises(ConfigurationError):
        rate_limited(limiter, {"limit": 1})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        rate_limited(limiter)("not a callback")  # type: ignore[arg-type]
    assert effective_sender(SimpleNamespace(effective_user=None, effective_chat=None)) is None  # type: ignore[arg-type]


async def test_the_ptb_wrapper_in_group_minus_one_limits_every_update() -> None:
    """The documented global limit: a no-op TypeHandler whose on_limit stops the update."""
    limiter = RateLimiter(MemoryStorage(), limit=2, window=60, clock=FakeClock())
    request = RecordingRequest()
    app = (
        Application.builder()
        .token("123:abc")
        .request(request)
        .get_updates_request(RecordingRequest())
        .build()
    )

    async def stop(update: PTBUpdate, context: Any, result: RateLimitResult) -> None:
        raise ApplicationHandlerStop

    async def noop(update: PTBUpdate, context: Any) -> None:
        return None

    async def echo(update: PTBUpdate, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None and update.effective_message.text
        await update.effective_message.reply_text(update.effective_message.text)

    app.add_handler(TypeHandler(PTBUpdate, rate_limited(limiter, on_limit=stop)(noop)), group=-1)
    app.add_handler(MessageHandler(filters.TEXT, echo))
    async with app:
        for text in ("a", "b", "c", "d"):
            await app.process_update(message(app, 1, text))
        await app.process_update(message(app, 2, "e"))
    assert request.texts() == ["a", "b", "e"]


# ------------------------------------------------------------------ telebot


def telebot_message(user_id: int, text: str) -> tb.Update:
    n = next(_update_ids)
    update = tb.Update.de_json(
        {
            "update_id": n,
            "message": {
                "message_id": n,
                "date": int(time.time()),
                "chat": {"id": user_id, "type": "private"},
                "from": {"id": user_id, "is_bot": False, "first_name": "U"},
                "text": text,
            },
        }
    )
    assert update is not None
    return update


async def test_the_async_telebot_middleware_cancels_updates_beyond_the_limit() -> None:
    clock = FakeClock()
    storage = MemoryStorage()
    limiter = RateLimiter(storage, limit=2, window=60, clock=clock)
    seen: list[Any] = []

    async def on_limit(message: tb.Message, result: RateLimitResult) -> None:
        seen.append(("refused", message.from_user.id, result.retry_after))

    bot = AsyncTeleBot(TOKEN)
    bot.setup_middleware(AsyncRateLimitMiddleware(limiter, on_limit=on_limit))

    @bot.message_handler(func=lambda m: True)
    async def echo(message: tb.Message, rate_limit: RateLimitResult) -> None:
        seen.append(("echo", message.from_user.id, rate_limit.remaining))

    for user in (1, 1, 1, 2):
        await bot.process_new_updates([telebot_message(user, "hi")])
    clock.advance(60)
    await bot.process_new_updates([telebot_message(1, "hi")])
    assert seen == [
        ("echo", 1, 1),
        ("echo", 1, 0),
        ("refused", 1, 60.0),
        ("echo", 2, 1),
        ("echo", 1, 1),
    ]
    assert await storage.get("rl:default:1") == [int(T0 * 1000) + 60_000]


def test_the_sync_telebot_middleware_shares_the_state_storages_loop_thread() -> None:
    """One backend object for states and limits, used only on the TeleBotStorage's loop."""
    clock = FakeClock()
    storage = MemoryStorage()
    states = TeleBotStorage(storage, timeout=10)
    limiter = RateLimiter(storage, limit=2, window=60, clock=clock)
    seen: list[Any] = []
    middleware = SyncRateLimitMiddleware(
        limiter, loop=states.loop, on_limit=lambda m, r: seen.append(("refused", r.count))
    )
    bot = TeleBot(TOKEN, threaded=False, state_storage=states, use_class_middlewares=True)
    bot.setup_middleware(middleware)

    @bot.message_handler(func=lambda m: True)
    def echo(message: tb.Message) -> None:
        bot.set_state(message.from_user.id, "talking", message.chat.id)
        seen.append(("echo", message.text))

    try:
        for text in ("a", "b", "c"):
            bot.process_new_updates([telebot_message(1, text)])
        assert seen == [("echo", "a"), ("echo", "b"), ("refused", 2)]
        assert states.get_state(1, 1, bot_id=42) == "talking"
        assert states.loop.run(storage.get("rl:default:1")) == [int(T0 * 1000)] * 2
        middleware.close()  # a passed loop is not the middleware's to close
        assert states.loop.thread.is_alive()
    finally:
        states.close()
    own = SyncRateLimitMiddleware(RateLimiter(limit=1, window=60), timeout=5)
    try:
        assert own.pre_process(SimpleNamespace(from_user=SimpleNamespace(id=3)), {}) is None
        assert own.pre_process(SimpleNamespace(from_user=SimpleNamespace(id=3)), {}) is not None
    finally:
        own.close()
    assert not own.loop.thread.is_alive()


def test_telebot_adapter_arguments_are_checked() -> None:
    limiter = RateLimiter(limit=1, window=1)
    for kwargs in ({"update_types": []}, {"update_types": [""]}, {"key": 5}, {"on_limit": "x"}):
        with pytest.raises(ConfigurationError):
            AsyncRateLimitMiddleware(limiter, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        AsyncRateLimitMiddleware(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        AsyncRateLimitMiddleware(limiter, {"limit": 1})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        SyncRateLimitMiddleware(limiter, loop="loop")  # type: ignore[arg-type]
    assert AsyncRateLimitMiddleware(limiter, update_types="message").update_types == ["message"]
