"""A child process for the SQLite durability and multi-process tests (not a test module).

Usage: ``python _sqlite_child.py MODE PATH [COUNT]``

* ``write``: set ``key:<i>`` to ``{"i": i}`` for i = 0..COUNT-1, printing ``i`` (flushed) as soon
  as each ``set`` has returned, so the parent knows exactly which writes were acknowledged.
* ``incr`` / ``update``: wait for ``PATH.go`` to exist (so all children start together), then do
  COUNT ``incr("counter")`` or ``update("doc", ...)`` calls and print ``done``.
* ``unique``: wait for ``PATH.go``, then set COUNT unique keys (``<pid>:<i>``) to 500-byte
  values back to back, never yielding, and print ``done``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from gramio_storage.sqlite import SQLiteStorage


def _bump(doc: dict[str, int]) -> dict[str, int]:
    return {"n": doc["n"] + 1}


async def main(mode: str, path: str, count: int) -> None:
    storage = SQLiteStorage(path, timeout=30.0)
    try:
        if mode == "write":
            for i in range(count):
                await storage.set(f"key:{i}", {"i": i, "pad": "x" * 200})
                sys.stdout.write(f"{i}\n")
                sys.stdout.flush()
            return
        if mode == "unique":
            value = "x" * 498  # 500 bytes of JSON text
            for i in range(count):
                await storage.set(f"{os.getpid()}:{i}", value)
            print("done", flush=True)
            return
        for _ in range(count):
            if mode == "incr":
                await storage.incr("counter")
            else:
                await storage.update("doc", _bump, default={"n": 0})
            # A bot serves other updates between writes; yielding lets the others interleave.
            await asyncio.sleep(0)
        print("done", flush=True)
    finally:
        await storage.close()


def wait_for_start(path: str) -> None:
    """Block until the parent creates ``PATH.go``, so every child starts at the same moment."""
    deadline = time.monotonic() + 30
    while not os.path.exists(path + ".go"):
        if time.monotonic() > deadline:
            raise SystemExit("start signal never came")
        time.sleep(0.005)


if __name__ == "__main__":
    if sys.argv[1] != "write":
        wait_for_start(sys.argv[2])
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 10**6))
