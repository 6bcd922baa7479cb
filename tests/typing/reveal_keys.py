"""Static checks for typed keys, run through mypy by tests/test_typing.py.

Each ``reveal_type`` line is paired with the type mypy must print, in a ``# R:`` comment.
Lines marked ``# E:`` must be rejected by the type checker.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict, reveal_type

import msgspec

from gramio_storage import Key, MemoryStorage, Storage


@dataclasses.dataclass
class User:
    name: str
    age: int


class Point(msgspec.Struct):
    x: int
    y: int


class Movie(TypedDict):
    title: str


USER = Key("user:{id}", User)
POINT = Key("point", Point)
VIEWS = Key("views", int)
TAGS = Key("tags", list[str])
MOVIE = Key("movie", Movie)
UNTYPED = Key("raw")


async def check(storage: MemoryStorage, plugin_storage: Storage) -> None:
    reveal_type(USER)  # R: gramio_storage._keys.Key[reveal_keys.User]
    reveal_type(USER.format(id=1))  # R: gramio_storage._keys.Key[reveal_keys.User]
    reveal_type(await storage.get(USER.format(id=1)))  # R: reveal_keys.User | None
    reveal_type(await storage.get(POINT))  # R: reveal_keys.Point | None
    reveal_type(await storage.get(VIEWS, 0))  # R: int
    reveal_type(await storage.get(TAGS))  # R: list[str] | None
    reveal_type(await storage.get(MOVIE))  # R: TypedDict(reveal_keys.Movie, {'title': str}) | None
    reveal_type(await storage.get(UNTYPED))  # R: Any | None
    reveal_type(await storage.get("plain"))  # R: Any
    reveal_type(await storage.incr(VIEWS))  # R: int
    reveal_type(await storage.update(VIEWS, lambda v: (v or 0) + 1))  # R: int
    reveal_type(await storage.get_many([VIEWS]))  # R: dict[gramio_storage._keys.Key[int], int]
    reveal_type(await plugin_storage.get(USER.format(id=2)))  # R: reveal_keys.User | None
    reveal_type(storage.with_prefix("p:"))  # R: gramio_storage.memory.MemoryStorage

    await storage.set(USER.format(id=1), User("a", 1))
    await storage.set(VIEWS, 1)
    await plugin_storage.set(USER.format(id=1), User("a", 1))
    await storage.set(USER.format(id=1), Point(1, 2))  # E: misc
    await storage.set(VIEWS, "one")  # E: misc
    await plugin_storage.set(VIEWS, "one")  # E: misc
    _: Any = await storage.get("plain")
