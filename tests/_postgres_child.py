"""A separate process driving a PostgresStorage, for the durability and multi-process tests.

Usage: ``python _postgres_child.py MODE DSN TABLE [ARGS]``

* ``write PREFIX``: sets ``PREFIX0``, ``PREFIX1``... (value ``{"i": n}``) forever, printing each
  key on its own line only after ``set`` returned, until killed. On a storage error it prints
  the error's class name to stderr and exits with status 3.
* ``incr KEY N`` / ``update KEY N``: connects, prints ``ready``, waits for a line on stdin (so
  that every process starts together), then runs N ``incr`` or N ``update`` on KEY and prints
  ``done``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from gramio_storage import StorageError
from gramio_storage.postgres import PostgresStorage


def _bump(value: dict[str, Any]) -> dict[str, Any]:
    return {"n": value["n"] + 1}


async def main(mode: str, dsn: str, table: str, args: list[str]) -> int:
    storage = PostgresStorage(
        dsn, table=table, sweep_interval=None, min_connections=1, max_connections=2
    )
    try:
        await storage.open()
        if mode == "write":
            prefix = args[0]
            i = 0
            while True:
                await storage.set(f"{prefix}{i}", {"i": i})
                sys.stdout.write(f"{prefix}{i}\n")
                sys.stdout.flush()
                i += 1
        key, count = args[0], int(args[1])
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        for _ in range(count):
            if mode == "incr":
                await storage.incr(key)
            else:
                await storage.update(key, _bump, default={"n": 0})
        print("done", flush=True)
        return 0
    except StorageError as e:
        print(e.__class__.__name__, file=sys.stderr, flush=True)
        return 3
    finally:
        await storage.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])))
