"""Redis storages side by side, in one run, against one private redis-server on loopback.

Contenders, on the same small session dict (``_common.SESSION``), each task on its own keys:

* gramio-storage ``RedisStorage`` (automatic pipelining, the default) and the same storage with
  ``pipelining=False`` (one pooled connection per command, as before);
* raw redis-py + ``json`` (``Redis.from_url``, its default pool): the floor every wrapper adds to;
* aiogram's ``RedisStorage`` (``set_data``/``get_data``);
* valkey-glide + ``json`` (Rust core, one multiplexed connection), if installed.

Measured:

1. set+get pairs per second with 1, 10 and 100 concurrent tasks;
2. sequential ``set``, ``get`` and ``update`` (latency: one task, awaited one by one);
3. aiogram's ``Dispatcher.feed_update`` with 100 updates in flight at once, FSM on our Redis
   storage (``AiogramStorage(RedisStorage)``) vs aiogram's own ``RedisStorage`` (the bot of
   ``bench/bench_bot.py``: read the state, merge a field into the data, move the state, reply);
4. ``get_many(100)`` against 100 sequential ``get`` calls.

Rounds are interleaved (every contender runs every measurement once per round, the first slot
rotating), so a noisy moment on a shared machine hits all of them. Reported: the best round of
each, and the median over rounds of the per-round ratio (steadier when the machine is noisy).

Run: ``.venv/bin/python bench/bench_redis.py [--rounds 5] [--pairs 4000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import KEYS, SESSION, USERS, Op, aiogram_ops, bump, storage_ops
from _redis_server import redis_server  # the tests' helper that runs redis-server
from gramio_storage.redis import RedisStorage

LEVELS = (1, 10, 100)
BATCH = 100
MINE = "gramio-storage RedisStorage"


class Contender:
    def __init__(
        self,
        name: str,
        set_: Op,
        get: Op,
        update: Op,
        close: Callable[[], Awaitable[Any]],
        get_many: Op | None = None,
    ) -> None:
        self.name, self.set, self.get, self.update = name, set_, get, update
        self.close, self.get_many = close, get_many


def gramio(url: str, *, pipelining: bool = True) -> Contender:
    storage = RedisStorage.from_url(url, pipelining=pipelining)
    name = MINE if pipelining else MINE + " (pipelining=False)"

    async def get_many(i: int) -> Any:
        return await storage.get_many(KEYS[:BATCH])

    return Contender(name, *storage_ops(storage), storage.close, get_many)


def raw_redis(url: str) -> Contender:
    client = aioredis.Redis.from_url(url)
    keys = [f"raw:{i}" for i in range(USERS)]

    async def set_(i: int) -> None:
        await client.set(keys[i % USERS], json.dumps(SESSION))

    async def get(i: int) -> Any:
        data = await client.get(keys[i % USERS])
        return None if data is None else json.loads(data)

    async def update(i: int) -> Any:  # not atomic: a plain get-then-set
        key = keys[i % USERS]
        data = await client.get(key)
        value = bump(json.loads(data) if data is not None else dict(SESSION))
        await client.set(key, json.dumps(value))
        return value

    return Contender("raw redis-py + json", set_, get, update, client.aclose)


def aiogram(url: str) -> Contender:
    from aiogram.fsm.storage.redis import RedisStorage as AiogramRedis

    storage = AiogramRedis(aioredis.Redis.from_url(url))
    return Contender("aiogram RedisStorage", *aiogram_ops(storage), storage.close)


async def glide(port: int) -> Contender | None:
    try:
        from glide import GlideClient, GlideClientConfiguration, NodeAddress
    except ImportError:
        return None
    config = GlideClientConfiguration([NodeAddress("127.0.0.1", port)], request_timeout=5000)
    client = await GlideClient.create(config)
    keys = [f"glide:{i}" for i in range(USERS)]

    async def set_(i: int) -> None:
        await client.set(keys[i % USERS], json.dumps(SESSION))

    async def get(i: int) -> Any:
        data = await client.get(keys[i % USERS])
        return None if data is None else json.loads(data)

    async def update(i: int) -> Any:  # not atomic: a plain get-then-set
        key = keys[i % USERS]
        data = await client.get(key)
        value = bump(json.loads(data) if data is not None else dict(SESSION))
        await client.set(key, json.dumps(value))
        return value

    return Contender("valkey-glide + json", set_, get, update, client.close)


async def pairs_per_second(c: Contender, tasks: int, pairs: int) -> float:
    """``tasks`` concurrent tasks share about ``pairs`` set+get pairs, each on its own keys."""
    per_task = max(1, pairs // tasks)
    stride = USERS // tasks

    async def task(t: int) -> None:
        base = t * stride
        for i in range(per_task):
            k = base + i % stride
            await c.set(k)
            await c.get(k)

    start = time.perf_counter()
    await asyncio.gather(*(task(t) for t in range(tasks)))
    return per_task * tasks / (time.perf_counter() - start)


async def sequential(op: Op, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        await op(i)
    return n / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------- aiogram


def dispatchers(url: str) -> list[tuple[str, Any, Any, Callable[[], Awaitable[Any]]]]:
    """(name, dispatcher, bot, close) for our FSM storage on Redis and aiogram's own."""
    from aiogram import Dispatcher
    from aiogram.fsm.storage.redis import RedisStorage as AiogramRedis

    from bench_bot import make_bot, make_router
    from gramio_storage.aiogram import AiogramStorage

    out = []
    ours = RedisStorage.from_url(url)
    theirs = AiogramRedis(aioredis.Redis.from_url(url))
    for name, fsm, close in (
        ("AiogramStorage(gramio-storage RedisStorage)", AiogramStorage(ours), ours.close),
        ("aiogram RedisStorage", theirs, theirs.close),
    ):
        dp = Dispatcher(storage=fsm)
        dp.include_router(make_router(False))
        bot, _ = make_bot()
        out.append((name, dp, bot, close))
    return out


async def feed(dp: Any, bot: Any, updates: list[Any], in_flight: int) -> float:
    """Updates per second with ``in_flight`` updates handled at once."""
    queue = iter(updates)

    async def worker() -> None:
        for update in queue:
            await dp.feed_update(bot, update)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return len(updates) / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------- main


def median_ratio(rounds: list[dict[str, float]], a: str, b: str) -> float:
    return statistics.median(r[a] / r[b] for r in rounds if a in r and b in r)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=4000, help="set+get pairs per measurement")
    parser.add_argument("--updates", type=int, default=3000, help="updates per dispatcher run")
    parser.add_argument(
        "--cluster", action="store_true", help="only: set+get on a 3-master cluster (no pipelining)"
    )
    args = parser.parse_args()
    if args.cluster:
        await cluster(args.rounds, args.pairs)
        return

    with redis_server() as server:
        contenders = [gramio(server.url), gramio(server.url, pipelining=False),
                      raw_redis(server.url), aiogram(server.url)]  # fmt: skip
        glide_contender = await glide(server.port)
        if glide_contender is not None:
            contenders.append(glide_contender)
        names = [c.name for c in contenders]
        for c in contenders:  # warm up: connections, scripts, first-use caches
            for i in range(USERS):
                await c.set(i)
            await c.update(0)
            await pairs_per_second(c, 100, 500)

        from bench_bot import make_updates

        bots = dispatchers(server.url)
        updates = make_updates(bots[0][2], args.updates)
        for _, dp, bot, _ in bots:
            await feed(dp, bot, updates[:500], 100)

        # per round: metric -> contender -> value
        rounds: list[dict[str, dict[str, float]]] = []
        for r in range(args.rounds):
            row: dict[str, dict[str, float]] = {}
            order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
            for level in LEVELS:
                metric = f"{level} tasks"
                for c in order:
                    pairs = args.pairs // 2 if level == 1 else args.pairs
                    row.setdefault(metric, {})[c.name] = await pairs_per_second(c, level, pairs)
            for c in order:
                for op in ("set", "get", "update"):
                    rate = await sequential(getattr(c, op), args.pairs // 4)
                    row.setdefault(op, {})[c.name] = rate
            mine = contenders[0]
            assert mine.get_many is not None
            row.setdefault("get_many(100)", {})[MINE] = await sequential(mine.get_many, 200)

            async def hundred_gets(_: int, mine: Contender = mine) -> None:
                for i in range(BATCH):
                    await mine.get(i)

            row.setdefault("100 gets", {})[MINE] = await sequential(hundred_gets, 20)
            for name, dp, bot, _ in bots if r % 2 == 0 else bots[::-1]:
                row.setdefault("dispatcher, 100 in flight", {})[name] = await feed(
                    dp, bot, updates, 100
                )
            rounds.append(row)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

        for c in contenders:
            await c.close()
        for *_, close in bots:
            await close()
        info = aioredis.Redis.from_url(server.url)
        redis_version = (await info.info("server"))["redis_version"]
        await info.aclose()

    glide_version = "not installed"
    if glide_contender is not None:
        from importlib.metadata import version

        glide_version = version("valkey-glide")
    print(f"Python {platform.python_version()}, redis-py {redis.__version__}, valkey-glide "
          f"{glide_version}, redis-server {redis_version}, {platform.machine()}")  # fmt: skip
    print(f"best of {args.rounds} interleaved rounds; {args.pairs} set+get pairs per measurement")

    def best(metric: str, name: str) -> float:
        return max(r[metric][name] for r in rounds if name in r.get(metric, {}))

    def by(metric: str) -> list[dict[str, float]]:
        return [r[metric] for r in rounds if metric in r]

    print("\nset+get pairs per second (best round)")
    print(f"{'contender':48} " + " ".join(f"{f'{n} tasks':>10}" for n in LEVELS))
    for name in names:
        print(f"{name:48} " + " ".join(f"{best(f'{n} tasks', name):>10,.0f}" for n in LEVELS))
    print("\nratios, gramio-storage / peer (median of per-round ratios; best/best in brackets)")
    for peer in names[1:]:
        cells = []
        for n in LEVELS:
            metric = f"{n} tasks"
            med = median_ratio(by(metric), MINE, peer)
            cells.append(f"{n}: {med:5.2f}x ({best(metric, MINE) / best(metric, peer):.2f}x)")
        print(f"  vs {peer:46} " + "   ".join(cells))

    print("\nsequential operations per second (best round)")
    print(f"{'contender':48} " + " ".join(f"{op:>10}" for op in ("set", "get", "update")))
    for name in names:
        cells = " ".join(f"{best(op, name):>10,.0f}" for op in ("set", "get", "update"))
        print(f"{name:48} {cells}")

    print("\naiogram Dispatcher.feed_update, 100 updates in flight (updates/s, best round)")
    bot_names = [name for name, *_ in bots]
    for name in bot_names:
        print(f"  {name:48} {best('dispatcher, 100 in flight', name):>10,.0f}")
    med = median_ratio(by("dispatcher, 100 in flight"), bot_names[0], bot_names[1])
    print(f"  ratio: {med:.2f}x (median of rounds; target >= 3x)")

    gm, hg = best("get_many(100)", MINE), best("100 gets", MINE)
    print(f"\nget_many(100): {gm:,.0f}/s; 100 sequential gets: {hg:,.0f}/s; {gm / hg:.1f}x")

    print("\ntargets (median of per-round ratios):")
    raw, glide_name = "raw redis-py + json", "valkey-glide + json"
    checks = [(100, raw, 5.0), (10, raw, 2.5), (1, raw, 1.0)]
    if glide_contender is not None:
        checks.insert(1, (100, glide_name, 1.3))
    for n, peer, target in checks:
        med = median_ratio(by(f"{n} tasks"), MINE, peer)
        verdict = "met" if med >= target else "MISSED"
        print(f"  {n:>3} tasks vs {peer:22} {med:5.2f}x (target >= {target}x) {verdict}")


async def cluster(rounds: int, pairs: int) -> None:
    """set+get pairs/s on a 3-master cluster (redis-py's cluster client) and on one server."""
    from _redis_server import redis_cluster

    with redis_cluster() as nodes, redis_server() as server:
        contenders = [
            gramio(server.url),
            Contender(
                MINE + " on a 3-master cluster",
                *storage_ops(s := RedisStorage.from_url(nodes.url, cluster=True)),
                s.close,
            ),
            gramio(server.url, pipelining=False),
        ]
        for c in contenders:
            await pairs_per_second(c, 100, 500)
        table: dict[str, dict[int, list[float]]] = {c.name: {} for c in contenders}
        for r in range(rounds):
            for level in LEVELS:
                for c in contenders[r % 3 :] + contenders[: r % 3]:
                    rate = await pairs_per_second(c, level, pairs // 2 if level == 1 else pairs)
                    table[c.name].setdefault(level, []).append(rate)
        for c in contenders:
            await c.close()
    print(f"set+get pairs per second, best of {rounds} interleaved rounds")
    print(f"{'contender':56} " + " ".join(f"{f'{n} tasks':>10}" for n in LEVELS))
    for name, row in table.items():
        print(f"{name:56} " + " ".join(f"{max(row[n]):>10,.0f}" for n in LEVELS))


if __name__ == "__main__":
    if sys.version_info < (3, 11):
        raise SystemExit("Python 3.11+ required")
    asyncio.run(main())
