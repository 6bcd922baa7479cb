"""A second process for the near-cache tests: writes a key each time it reads a line.

``python _wrappers_writer.py URL KEY``: for every line ``N`` on stdin it sets ``KEY`` to the JSON
number ``N`` with plain redis-py (another process, another connection), then prints the wall
clock time right after the server acknowledged the write.
"""

from __future__ import annotations

import sys
import time

import redis


def main() -> None:
    url, key = sys.argv[1], sys.argv[2]
    client = redis.Redis.from_url(url)
    print("ready", flush=True)
    for line in sys.stdin:
        client.set(key, line.strip().encode())
        print(repr(time.time()), flush=True)


if __name__ == "__main__":
    main()
