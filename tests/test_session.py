"""The framework-agnostic session helper keeps GramIO's session-plugin semantics."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from _bot_backends import *  # noqa: F403  (the `backend` fixture and server fixtures)
from _bot_backends import BotBackend
from _support import FakeClock
from gramio_storage import EncodeError, InvalidTTLError, MemoryStorage
from gramio_storage.session import Session, SessionManager


class CountingStorage(MemoryStorage):
    """A real MemoryStorage that counts the calls the session makes (no behaviour changed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    async def get(self, key: Any, default: Any = None) -> Any:
        self.calls.append("get")
        return await super().get(key, default)

    async def set(self, key: Any, value: Any, *, ttl: Any = None) -> None:
        self.calls.append("set")
        await super().set(key, value, ttl=ttl)

    async def delete(self, key: Any) -> bool:
        self.calls.append("delete")
        return await super().delete(key)


def counter() -> dict[str, Any]:
    return {"count": 0, "items": []}


@pytest.fixture
def storage() -> CountingStorage:
    return CountingStorage()


async def test_a_new_session_starts_from_initial_and_is_not_written(
    storage: CountingStorage,
) -> None:
    sessions = SessionManager(storage, initial=counter)
    async with sessions.open(1) as session:
        assert session.data == {"count": 0, "items": []}
        assert not session.exists
    assert storage.calls == ["get"]
    assert not await storage.has("session:1")


async def test_initial_is_a_fresh_object_per_session(storage: CountingStorage) -> None:
    sessions = SessionManager(storage, initial=counter)
    a, b = sessions.session(1), sessions.session(2)
    (await a.load())["items"].append("x")
    assert (await b.load())["items"] == []


async def test_a_change_is_saved_once_and_read_back(storage: CountingStorage) -> None:
    sessions = SessionManager(storage, initial=counter)
    async with sessions.open(1) as session:
        session.data["count"] += 1
        session.data["count"] += 1
    assert storage.calls == ["get", "set"]
    assert await storage.get("session:1") == {"count": 2, "items": []}
    async with sessions.open(1) as session:
        assert session.data["count"] == 2
        assert session.exists


async def test_a_nested_mutation_is_detected(storage: CountingStorage) -> None:
    sessions = SessionManager(storage, initial=counter)
    await storage.set("session:1", {"count": 0, "items": [{"tags": []}]})
    async with sessions.open(1) as session:
        session.data["items"][0]["tags"].append("deep")
        assert session.changed
    assert await storage.get("session:1") == {"count": 0, "items": [{"tags": ["deep"]}]}


async def test_an_unchanged_existing_session_is_not_rewritten(storage: CountingStorage) -> None:
    sessions = SessionManager(storage, initial=counter)
    await storage.set("session:1", {"count": 5, "items": []})
    storage.calls.clear()
    async with sessions.open(1) as session:
        assert session.data["count"] == 5
        session.data["count"] += 1
        session.data["count"] -= 1  # back to what was loaded: nothing to write
    assert storage.calls == ["get"]


async def test_replacing_the_whole_session_is_saved(storage: CountingStorage) -> None:
    """GramIO's plugin loses this one; here assignment is a change like any other."""
    sessions = SessionManager(storage, initial=counter)
    await storage.set("session:1", {"count": 5, "items": []})
    async with sessions.open(1) as session:
        session.data = {"count": 100, "items": ["new"]}
    assert await storage.get("session:1") == {"count": 100, "items": ["new"]}


async def test_assigning_without_loading_writes_without_reading(storage: CountingStorage) -> None:
    sessions = SessionManager(storage, initial=counter, lazy=True)
    async with sessions.open(1) as session:
        session.data = {"count": 7, "items": []}
    assert storage.calls == ["set"]
    assert await storage.get("session:1") == {"count": 7, "items": []}


async def test_clear_deletes_at_once_and_restarts_from_initial(storage: CountingStorage) -> None:
    sessions = SessionManager(storage, initial=counter)
    await storage.set("session:1", {"count": 5, "items": []})
    async with sessions.open(1) as session:
        await session.clear()
        assert not await storage.has("session:1")  # deleted before the update ends
        assert session.data == counter()
        assert not session.exists
    assert not await storage.has("session:1")  # the fresh initial value is not written


async def test_a_change_after_clear_is_saved(storage: CountingStorage) -> None:
    sessions = SessionManager(storage, initial=counter)
    await storage.set("session:1", {"count": 5, "items": []})
    async with sessions.open(1) as session:
        await session.clear()
        session.data["count"] = 1
    assert await storage.get("session:1") == {"count": 1, "items": []}


async def test_lazy_sessions_read_nothing_until_loaded(storage: CountingStorage) -> None:
    sessions = SessionManager(storage, initial=counter, lazy=True)
    async with sessions.open(1) as session:
        assert not session.loaded
        with pytest.raises(RuntimeError, match=r"await session\.load\(\)"):
            _ = session.data
    assert storage.calls == []
    async with sessions.open(1) as session:
        data = await session.load()
        assert await session.load() is data  # read once per update
        data["count"] = 3
    assert storage.calls == ["get", "set"]
    assert await storage.get("session:1") == {"count": 3, "items": []}


async def test_open_can_override_lazy(storage: CountingStorage) -> None:
    sessions = SessionManager(storage, initial=counter, lazy=True)
    async with sessions.open(1, lazy=False) as session:
        assert session.loaded


async def test_an_exception_saves_nothing(storage: CountingStorage) -> None:
    sessions = SessionManager(storage, initial=counter)
    await storage.set("session:1", {"count": 1, "items": []})

    async def update() -> None:
        async with sessions.open(1) as session:
            session.data["count"] = 50
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await update()
    assert await storage.get("session:1") == {"count": 1, "items": []}


async def test_namespace_is_configurable_and_bare_keys_match_gramio() -> None:
    storage = MemoryStorage()
    bare = SessionManager(storage, initial=counter, namespace="")
    async with bare.open(42) as session:
        session.data["count"] = 1
    # GramIO's session plugin reads and writes JSON under the bare "<senderId>" key.
    assert await storage.get("42") == {"count": 1, "items": []}
    assert bare.key(42) == "42"
    assert SessionManager(storage, namespace="s:").key("a") == "s:a"


@dataclasses.dataclass
class Profile:
    name: str = ""
    visits: int = 0


async def test_typed_sessions_decode_into_the_type() -> None:
    storage = MemoryStorage()
    sessions = SessionManager(storage, initial=Profile, type=Profile)
    async with sessions.open(1) as session:
        assert session.data == Profile()
        session.data.visits += 1
        session.data.name = "Alice"
    async with sessions.open(1) as session:
        assert session.data == Profile(name="Alice", visits=1)
    assert await storage.get("session:1") == {"name": "Alice", "visits": 1}


async def test_an_unencodable_session_raises_encode_error_naming_the_key() -> None:
    storage = MemoryStorage()
    sessions = SessionManager(storage, initial=counter)
    await storage.set("session:1", {"count": 1, "items": []})
    session = sessions.session(1)
    await session.load()
    session.data["bad"] = object()
    with pytest.raises(EncodeError, match="session:1") as info:
        await session.save()
    assert info.value.key == "session:1"
    assert await storage.get("session:1") == {"count": 1, "items": []}


async def test_reference_mode_storage_still_detects_in_place_changes() -> None:
    """A MemoryStorage(codec=None) hands out its own objects; changes are compared as JSON."""
    storage = MemoryStorage(codec=None)
    sessions = SessionManager(storage, initial=counter)
    async with sessions.open(1) as session:
        session.data["count"] = 1
    assert await storage.get("session:1") == {"count": 1, "items": []}
    async with sessions.open(2) as session:
        assert session.data == counter()
    assert not await storage.has("session:2")


async def test_ttl_applies_to_writes(storage: CountingStorage) -> None:
    sessions = SessionManager(storage, initial=counter, ttl=60)
    async with sessions.open(1) as session:
        session.data["count"] = 1
    remaining = await storage.ttl("session:1")
    assert remaining is not None
    assert 59 < remaining <= 60


async def test_a_fixed_ttl_is_not_renewed_by_reads() -> None:
    clock = FakeClock()
    storage = MemoryStorage(clock=clock)
    sessions = SessionManager(storage, initial=counter, ttl=60)
    async with sessions.open(1) as session:
        session.data["count"] = 1
    clock.advance(30)
    async with sessions.open(1) as session:
        assert session.data["count"] == 1
    assert await storage.ttl("session:1") == pytest.approx(30)


async def test_a_sliding_ttl_is_renewed_by_every_update_that_reads_it() -> None:
    clock = FakeClock()
    storage = MemoryStorage(clock=clock)
    sessions = SessionManager(storage, initial=counter, ttl=60, sliding=True)
    async with sessions.open(1) as session:
        session.data["count"] = 1
    for _ in range(3):  # 3 x 50 s > 60 s: alive only because each update renews it
        clock.advance(50)
        async with sessions.open(1) as session:
            assert session.data["count"] == 1
    assert await storage.ttl("session:1") == pytest.approx(60)
    clock.advance(61)
    assert not await storage.has("session:1")


async def test_a_sliding_ttl_does_not_write_sessions_that_do_not_exist() -> None:
    storage = CountingStorage()
    sessions = SessionManager(storage, initial=counter, ttl=60, sliding=True)
    async with sessions.open(1):
        pass
    assert storage.calls == ["get"]


def test_bad_arguments_raise_typed_errors() -> None:
    storage = MemoryStorage()
    with pytest.raises(InvalidTTLError, match="ttl"):
        SessionManager(storage, ttl=-1)
    with pytest.raises(TypeError, match="initial"):
        SessionManager(storage, initial={"count": 0})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="namespace"):
        SessionManager(storage, namespace=1)  # type: ignore[arg-type]


async def test_any_object_with_the_four_methods_is_a_session_store() -> None:
    """GramIO's contract: a plain object with get/has/set/delete is enough."""

    class DictStore:
        def __init__(self) -> None:
            self.data: dict[str, Any] = {}

        async def get(self, key: Any, default: Any = None) -> Any:
            return self.data.get(key, default)

        async def has(self, key: Any) -> bool:
            return key in self.data

        async def set(self, key: Any, value: Any, *, ttl: Any = None) -> None:
            self.data[key] = value

        async def delete(self, key: Any) -> bool:
            return self.data.pop(key, None) is not None

    store = DictStore()
    sessions = SessionManager(store, initial=counter)
    async with sessions.open(9) as session:
        session.data["items"].append(1)
    assert store.data == {"session:9": {"count": 0, "items": [1]}}
    async with sessions.open(9) as session:
        session.data["items"].append(2)  # the stored object itself: still seen as a change
    assert store.data["session:9"]["items"] == [1, 2]


def test_reprs_name_the_session() -> None:
    sessions = SessionManager(MemoryStorage(), initial=counter, ttl=5, sliding=True)
    assert "namespace='session:'" in repr(sessions)
    assert "sliding=True" in repr(sessions)
    session: Session[dict[str, Any]] = sessions.session(3)
    assert repr(session) == "Session('session:3', <not loaded>)"


async def test_sessions_persist_on_every_backend(backend: BotBackend) -> None:
    sessions = SessionManager(await backend.open(), initial=counter)
    async with sessions.open(1) as session:
        session.data["count"] += 1
        session.data["items"].append({"nested": [1]})
    restarted = SessionManager(await backend.open(), initial=counter)  # a new process
    async with restarted.open(1) as session:
        assert session.data == {"count": 1, "items": [{"nested": [1]}]}
        await session.clear()
    async with restarted.open(1) as session:
        assert not session.exists
