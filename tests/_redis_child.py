"""Several processes updating one Redis key at once: the cross-process no-lost-update check.

The test side calls :func:`run_workers`; each worker is this file run as a script,
``python _redis_child.py URL KEY COUNT GO_KEY [--cluster]``: it connects, counts itself in under
``GO_KEY:ready``, waits until ``GO_KEY`` exists (the parent sets it once every worker is ready, so
they all start hammering at the same moment), runs ``COUNT`` updates that increment
``{"n": ...}`` under ``KEY``, and prints a JSON line with how many times its update function ran
(more than ``COUNT`` means it lost races and retried).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from gramio_storage.redis import RedisStorage


async def run_workers(
    url: str, *, processes: int = 4, updates: int = 250, cluster: bool = False
) -> tuple[Any, int]:
    """Run ``processes`` workers doing ``updates`` update() calls each on one key at once.

    Returns the key's final value and the total number of update-function calls (retries
    included).
    """
    async with RedisStorage.from_url(url, cluster=cluster) as storage:
        key, go, ready = "mp:counter", "mp:go", "mp:go:ready"
        await storage.delete_many([key, go, ready])
        args = [str(Path(__file__)), url, key, str(updates), go]
        if cluster:
            args.append("--cluster")
        children = [
            await asyncio.create_subprocess_exec(
                sys.executable, *args, stdout=asyncio.subprocess.PIPE
            )
            for _ in range(processes)
        ]
        deadline = time.monotonic() + 60
        while await storage.get(ready, 0) < processes:  # every worker connected and waiting
            if time.monotonic() > deadline or any(c.returncode is not None for c in children):
                break
            await asyncio.sleep(0.005)
        await storage.set(go, True)
        outputs = await asyncio.wait_for(
            asyncio.gather(*(child.communicate() for child in children)), timeout=120
        )
        codes = [child.returncode for child in children]
        assert codes == [0] * processes, f"worker exit codes: {codes}"
        calls = sum(json.loads(out)["calls"] for out, _ in outputs)
        return await storage.get(key), calls


async def work(url: str, key: str, count: int, go: str, cluster: bool) -> dict[str, int]:
    """One worker: wait for the start signal, then ``count`` updates."""
    storage = RedisStorage.from_url(url, cluster=cluster)
    calls = 0

    def bump(value: dict[str, Any]) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"n": value["n"] + 1}

    try:
        await storage.incr(go + ":ready")
        deadline = time.monotonic() + 60
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
    """Entry point of a worker process."""
    url, key, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    result = asyncio.run(work(url, key, count, go, "--cluster" in sys.argv[5:]))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
