"""A two-minute tour of gramio-storage: typed keys, TTLs, atomic counters, prefixes, bulk ops.

Run it with ``make tour`` (or ``python examples/tour.py [URL]``). The URL picks the backend
(default: an in-memory storage); the code below is the same for every backend.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys

from gramio_storage import BaseStorage, DecodeError, Key, storage_from_url


@dataclasses.dataclass
class User:
    """What the tour stores per user."""

    name: str
    language: str = "en"
    visits: int = 0


USER = Key("user:{id}", User)  # a typed key template: values decode into User
VIEWS = Key("stats:views", int)


def say(text: str) -> None:
    print(f"  {text}")


async def tour(storage: BaseStorage) -> None:
    print(f"storage: {storage!r}\n")

    print("1. Typed keys")
    alice = USER.format(id=1)
    await storage.set(alice, User("Alice", "ru"))
    user = await storage.get(alice)  # statically and really a `User | None`
    say(f"get({alice.name!r}) -> {user!r}")
    say(f"the same key read as plain JSON -> {await storage.get('user:1')!r}")
    await storage.set("user:2", {"nickname": "no name field"})
    try:
        await storage.get(USER.format(id=2))
    except DecodeError as e:
        say(f"a value that does not fit User -> DecodeError: {e}")

    print("\n2. Atomic read-modify-write and counters")

    def visit(u: User | None) -> User:
        assert u is not None
        return dataclasses.replace(u, visits=u.visits + 1)

    await asyncio.gather(*(storage.update(alice, visit) for _ in range(50)))
    say(f"50 concurrent update() calls -> visits = {(await storage.get(alice)).visits}")  # type: ignore[union-attr]
    await asyncio.gather(*(storage.incr(VIEWS) for _ in range(100)))
    say(f"100 concurrent incr() calls -> {await storage.get(VIEWS)}")
    say(f"add('lock', ...) twice -> {await storage.add('lock', 1)}, {await storage.add('lock', 2)}")

    print("\n3. TTLs")
    await storage.set("otp:42", "123456", ttl=0.5)
    say(f"ttl('otp:42') -> {await storage.ttl('otp:42'):.2f} s left")
    await asyncio.sleep(0.6)
    say(f"after 0.6 s: get('otp:42') -> {await storage.get('otp:42')!r}")
    first, second = await storage.incr("rl:1", ttl=60), await storage.incr("rl:1", ttl=60)
    say(
        f"rate-limit window: incr(ttl=60) twice -> {first}, {second}, "
        f"window ends in {await storage.ttl('rl:1'):.0f} s"
    )

    print("\n4. Prefix views: one backend, one namespace per plugin")
    sessions = storage.with_prefix("session:")
    scenes = storage.with_prefix("scenes:")
    await sessions.set("1", {"cart": ["apple"]})
    await scenes.set("1", {"scene": "checkout", "step": 2})
    say(f"sessions.get('1') -> {await sessions.get('1')!r}")
    say(f"keys in the root storage -> {sorted([k async for k in storage.keys()])}")
    say(
        f"sessions.clear() -> deleted {await sessions.clear()}, scenes untouched: "
        f"{await scenes.get('1')!r}"
    )

    print("\n5. Bulk operations (one round trip where the backend allows)")
    await storage.set_many({f"item:{i}": {"n": i} for i in range(5)})
    found = await storage.get_many(["item:0", "item:3", "item:missing"])
    say(f"get_many -> {found}")
    say(f"clear('item:') -> {await storage.clear('item:')}")
    await storage.clear()


async def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "memory://"
    async with storage_from_url(url) as root:
        # Everything lives under "tour:", so a real database's other keys are never touched.
        storage = root.with_prefix("tour:")
        await storage.clear()
        await tour(storage)
    print("\nDone. Same code, any backend: pass another URL, e.g. sqlite:///tour.db")


if __name__ == "__main__":
    asyncio.run(main())
