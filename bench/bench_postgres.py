"""PostgreSQL storages side by side, in one run: gramio-storage vs py-key-value vs raw asyncpg.

A private PostgreSQL server (tests/_pg_server.py: initdb in a temp dir, loopback TCP, SCRAM
password, fsync off, synchronous_commit on) serves every contender in turn. Each does N
sequential ``set``, ``get`` and read-modify-write ``update`` calls on a small session dict,
cycling over 1,000 keys, then ``get_many`` of 100 keys against 100 single gets. Best of several
rounds. py-key-value has no atomic update: its row is a plain get-then-put (not atomic).

``--baseline SRC`` adds the ``PostgresStorage`` of another checkout (the ``src/`` folder of a
``git worktree add /tmp/pg-base <commit>``) as one more contender, imported under another
package name, so a change is measured against its predecessor in the same process, on the same
server, in interleaved rounds: a noisy machine then slows both alike.

Run: ``.venv/bin/python bench/bench_postgres.py [--n 5000] [--rounds 3] [--baseline SRC]``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import importlib.util
import platform
import sys
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import KEYS, SESSION, USERS, Op, ops_per_second, py_key_value_ops, storage_ops
from _pg_server import postgres_server
from gramio_storage.postgres import PostgresStorage


class Contender:
    def __init__(self, name: str, set_: Op, get: Op, update: Op, get_many: Op) -> None:
        self.name, self.set, self.get, self.update, self.get_many = (
            name,
            set_,
            get,
            update,
            get_many,
        )


MINE = "gramio-storage PostgresStorage"


async def gramio(
    dsn: str, storage_class: Any = PostgresStorage, name: str = MINE, table: str = "bench_gramio"
) -> tuple[Contender, Any]:
    storage = storage_class(dsn, table=table)
    await storage.open()

    async def get_many(i: int) -> Any:
        start = (i * 100) % (USERS - 100)
        return await storage.get_many(KEYS[start : start + 100])

    return Contender(name, *storage_ops(storage), get_many), storage.close


def baseline_class(src: str) -> Any:
    """``PostgresStorage`` of the checkout whose ``src/`` folder is ``src``, as another package."""
    package = str(Path(src).resolve() / "gramio_storage")
    spec = importlib.util.spec_from_file_location(
        "gramio_storage_baseline", f"{package}/__init__.py", submodule_search_locations=[package]
    )
    assert spec is not None and spec.loader is not None, f"no gramio_storage package in {src}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return importlib.import_module("gramio_storage_baseline.postgres").PostgresStorage


async def py_key_value(dsn: str) -> tuple[Contender, Any]:
    from key_value.aio.stores.postgresql import PostgreSQLStore

    store = PostgreSQLStore(url=dsn, table_name="bench_pykv")
    await store.__aenter__()

    async def get_many(i: int) -> Any:
        start = (i * 100) % (USERS - 100)
        return await store.get_many(KEYS[start : start + 100], collection="sessions")

    async def close() -> None:
        await store.__aexit__(None, None, None)

    name = "py-key-value PostgreSQLStore"
    return Contender(name, *py_key_value_ops(store), get_many), close


async def raw_asyncpg(dsn: str) -> tuple[Contender, Any]:
    """The floor: one asyncpg connection, prepared statements, msgspec, no pool, no expiry."""
    con = await asyncpg.connect(dsn)
    await con.execute(
        'CREATE TABLE IF NOT EXISTS bench_raw (key text COLLATE "C" PRIMARY KEY, value bytea)'
    )
    enc, dec = msgspec.json.Encoder().encode, msgspec.json.Decoder().decode
    put = "INSERT INTO bench_raw VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2"
    sel = "SELECT value FROM bench_raw WHERE key = $1"

    async def set_(i: int) -> None:
        await con.execute(put, KEYS[i % USERS], enc(SESSION))

    async def get(i: int) -> Any:
        data = await con.fetchval(sel, KEYS[i % USERS])
        return None if data is None else dec(data)

    async def update(i: int) -> Any:  # not atomic either: the floor of a read and a write
        key = KEYS[i % USERS]
        data = dec(await con.fetchval(sel, key))
        data["score"] += 1
        await con.execute(put, key, enc(data))
        return data

    async def get_many(i: int) -> Any:
        start = (i * 100) % (USERS - 100)
        rows = await con.fetch(
            "SELECT key, value FROM bench_raw WHERE key = ANY($1)", KEYS[start : start + 100]
        )
        return {k: dec(v) for k, v in rows}

    return Contender("raw asyncpg connection (floor)", set_, get, update, get_many), con.close


async def run(dsn: str, n: int, rounds: int, baseline: str | None) -> None:
    makers = [gramio, py_key_value, raw_asyncpg]
    if baseline is not None:
        base = functools.partial(
            gramio, storage_class=baseline_class(baseline), name="baseline", table="bench_base"
        )
        makers.insert(1, base)
    made = [await make(dsn) for make in makers]
    contenders = [c for c, _ in made]
    results: dict[str, dict[str, float]] = {c.name: {} for c in contenders}
    try:
        for c in contenders:
            for i in range(USERS):  # every key exists: gets and updates hit rows
                await c.set(i)
        # Rounds interleave the contenders, so a noisy neighbour slows them all alike.
        for op, count in (("set", n), ("get", n), ("update", n), ("get_many", max(n // 50, 20))):
            for _ in range(rounds):
                for c in contenders:
                    rate = await ops_per_second(getattr(c, op), count, 1)
                    results[c.name][op] = max(results[c.name].get(op, 0.0), rate)
    finally:
        for _, close in made:
            await close()
    for row in results.values():
        row["set+get"] = 1 / (1 / row["set"] + 1 / row["get"])
        row["get_many(100) keys/s"] = row.pop("get_many") * 100
        row["get_many vs 100 gets"] = row["get_many(100) keys/s"] / row["get"]
    print(
        f"Python {platform.python_version()}, asyncpg {asyncpg.__version__}, {platform.machine()}"
    )
    print(
        f"value: {len(msgspec.json.encode(SESSION))}-byte JSON session dict, {USERS} keys, "
        f"n={n}, best of {rounds}\n"
    )
    cols = list(next(iter(results.values())))
    print(f"{'contender':32} " + " ".join(f"{c:>21}" for c in cols))
    for name, row in results.items():
        print(f"{name:32} " + " ".join(f"{row[c]:>21,.1f}" for c in cols))
    mine = results[MINE]
    print("\nratios (gramio-storage / peer):")
    for name, row in results.items():
        if name != MINE:
            print(
                f"  vs {name:32} "
                + "  ".join(
                    f"{c} {mine[c] / row[c]:.2f}x" for c in ("set", "get", "update", "set+get")
                )
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--baseline", metavar="SRC", help="also run the PostgresStorage of this src/ folder"
    )
    args = parser.parse_args()
    with postgres_server() as server:
        asyncio.run(run(server.dsn, args.n, args.rounds, args.baseline))


if __name__ == "__main__":
    main()
