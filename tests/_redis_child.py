"""A worker process for the cross-process tests: N ``update()`` calls on one key of a Redis storage.

Run as ``python _redis_child.py URL KEY COUNT GO_KEY [--cluster]``. The worker connects, waits until
``GO_KEY`` exists (so every worker starts hammering at the same moment), runs ``COUNT`` updates
that increment ``{"n": ...}`` under ``KEY``, and prints a JSON line with how many times its
update function ran (more than ``COUNT`` means it lost races and retried).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from gramio_storage.redis import RedisStorage


async def work(url: str, key: str, count: int, go: str, cluster: bool) -> dict[str, int]:
    storage = RedisStorage.from_url(url, cluster=cluster)
    calls = 0

    def bump(value: dict[str, Any]) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"n": value["n"] + 1}

    try:
        deadline = time.monotonic() + 30
        while not await storage.has(go):
            if time.monotonic() > deadline:
                raise SystemExit("the start signal never came")
            await asyncio.sleep(0.002)
        for _ in range(count):
            await storage.update(key, bump, default={"n": 0})
    finally:
        await storage.close()
    return {"updates": count, "calls": calls}


def main() -> None:
    url, key, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    result = asyncio.run(work(url, key, count, go, "--cluster" in sys.argv[5:]))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
