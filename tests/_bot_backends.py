"""Every storage backend the bot-integration tests run on, as one parametrised fixture.

A test module star-imports this module (fixtures are looked up in the module's globals)::

    from _bot_backends import *  # noqa: F403  (the `backend` fixture and the server fixtures)

    async def test_flow(backend: BotBackend) -> None:
        storage = await backend.open()       # a new client over the same data, each call

``backend`` is parametrised over memory plus every backend module that exists in
``src/gramio_storage`` (SQLite, Redis, PostgreSQL, Cloudflare KV). A backend whose module exists
is never skipped: if its test server helper is missing, or its server does not start, the test
fails with the reason.

:meth:`BotBackend.open` returns a fresh storage object (as a restarted bot process would make)
over the same data, scoped to a prefix unique to the test, so tests share the session's servers
without seeing each other's keys. Everything opened is closed at teardown.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from _pytest.fixtures import FixtureFunctionDefinition

from gramio_storage import BaseStorage, MemoryStorage, storage_from_url

__all__ = ["BACKENDS", "BotBackend", "backend"]

_SRC = Path(__file__).resolve().parent.parent / "src" / "gramio_storage"


def _exists(module: str) -> bool:
    return (_SRC / f"{module}.py").exists() or (_SRC / module / "__init__.py").exists()


# name -> (module in gramio_storage, helper module in tests/, the fixture it provides)
_SERVERS: dict[str, tuple[str, str | None, str | None]] = {
    "sqlite": ("sqlite", None, None),
    "redis": ("redis", "_redis_server", "redis_url"),
    "postgres": ("postgres", "_pg_server", "postgres_dsn"),
    "cloudflare": ("cloudflare", "_cloudflare_server", "cloudflare_kv"),
}

BACKENDS: list[str] = ["memory"] + [n for n, (m, _, _) in _SERVERS.items() if _exists(m)]
"""Backends the suite runs on: memory plus every backend module present in the package."""

# Re-export the server fixtures so that star-importing modules see them. A helper that is
# missing is reported by the `backend` fixture (a failure), not here (an import error would
# hide every other backend's results).
_MISSING_HELPERS: dict[str, str] = {}
for _name in BACKENDS[1:]:
    _, _helper, _fixture = _SERVERS[_name]
    if _helper is None or _fixture is None:
        continue
    try:
        _module = importlib.import_module(_helper)
    except ImportError as _e:
        _MISSING_HELPERS[_name] = f"tests/{_helper}.py could not be imported: {_e}"
        continue
    for _attr in dir(_module):
        if isinstance(getattr(_module, _attr), FixtureFunctionDefinition):
            globals()[_attr] = getattr(_module, _attr)
            __all__.append(_attr)
    if _fixture not in globals():
        _MISSING_HELPERS[_name] = f"tests/{_helper}.py has no {_fixture!r} fixture"


class BotBackend:
    """One backend for a test: opens storages over the same data, closes them at the end.

    Attributes:
        name: ``memory``, ``sqlite``, ``redis``, ``postgres`` or ``cloudflare``.
        atomic: Whether ``add``/``update`` are atomic across processes (event isolation and
            race-free ``update_data`` need it).
    """

    def __init__(self, name: str, factory: Callable[[], Awaitable[BaseStorage]]) -> None:
        self.name = name
        self._factory = factory
        self._opened: list[BaseStorage] = []
        self.prefix = f"t{uuid.uuid4().hex[:12]}:"
        self.atomic = name != "cloudflare"

    async def open(self) -> BaseStorage:
        """A new storage object over this test's data (as a restarted process would open)."""
        root = await self._factory()
        self._opened.append(root)
        return root.with_prefix(self.prefix)

    async def aclose(self) -> None:
        if self._opened:
            try:
                await self._opened[0].with_prefix(self.prefix).clear()
            finally:
                for storage in self._opened:
                    await storage.close()

    def __repr__(self) -> str:
        return f"BotBackend({self.name})"


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BotBackend]:
    """Each available backend in turn (see the module docstring)."""
    name: str = request.param
    factory: Callable[[], Awaitable[BaseStorage]]
    if name == "memory":
        shared: dict[str, Any] = {}  # survives "restarts": every open() sees the same dict

        async def factory() -> BaseStorage:
            return MemoryStorage(shared)

    elif name == "sqlite":
        url = f"sqlite:///{tmp_path / 'bot.db'}"

        async def factory() -> BaseStorage:
            return storage_from_url(url)

    else:
        if name in _MISSING_HELPERS:
            pytest.fail(
                f"the {name} backend exists but its test server is unavailable: "
                f"{_MISSING_HELPERS[name]}"
            )
        server = request.getfixturevalue(_SERVERS[name][2])  # type: ignore[arg-type]

        async def factory() -> BaseStorage:
            if name == "cloudflare":
                return server.storage()  # type: ignore[no-any-return]
            return storage_from_url(server)

    bot_backend = BotBackend(name, factory)
    try:
        yield bot_backend
    finally:
        await bot_backend.aclose()
