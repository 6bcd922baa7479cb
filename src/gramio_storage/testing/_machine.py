"""A hypothesis state machine that runs random operation sequences against a dict model."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from .._errors import DecodeError, KeyNotFoundError
from .._storage import BaseStorage

__all__ = ["json_values", "make_state_machine"]

# Few keys, so operations collide; glob/LIKE characters and shared prefixes on purpose.
KEYS = st.sampled_from(["a", "b", "ab", "a:1", "a:10", "a*", "a%", "a_", "[a]", "ключ", "k" * 60])
PREFIXES = st.sampled_from(["", "a", "a:", "a:1", "a*", "a%", "a_", "[", "k", "zz"])

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)  # the range JavaScript readers agree on
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
"""Strategy for values every codec and backend must round-trip (what JSON can express)."""

Factory = Callable[[], "BaseStorage | Awaitable[BaseStorage]"]


def make_state_machine(
    factory: Factory,
    *,
    supports_atomic: bool = True,
    supports_ttl: bool = True,
    min_ttl: float = 0.0,
) -> type[RuleBasedStateMachine]:
    """Build a state machine that checks a storage against a plain dict, operation by operation.

    Args:
        factory: Returns a storage (or an awaitable of one), called inside the machine's own
            event loop for every example. The machine clears it first and closes it at the end.
        supports_atomic: Also exercise ``add``, ``incr`` and ``update``.
        supports_ttl: Also exercise writes with (long) TTLs and check ``ttl()``.
        min_ttl: The backend's minimum TTL.

    Returns:
        The machine class; expose ``Machine.TestCase`` as a test class in your module::

            TestMyStorageMachine = make_state_machine(lambda: MyStorage(...)).TestCase
    """
    long_ttl = max(min_ttl, 3600.0)

    class StorageMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.runner = asyncio.Runner()
            self.storage: BaseStorage = self.runner.run(self._open())
            self.model: dict[str, Any] = {}
            self.expiring: set[str] = set()

        async def _open(self) -> BaseStorage:
            made = factory()
            storage = await made if inspect.isawaitable(made) else made
            await storage.clear()
            return storage

        def run(self, awaitable: Awaitable[Any]) -> Any:
            async def wrap() -> Any:
                return await awaitable

            return self.runner.run(wrap())

        def teardown(self) -> None:
            try:
                self.run(self.storage.clear())
                self.run(self.storage.close())
            finally:
                self.runner.close()

        def _forget_ttl(self, key: str) -> None:
            self.expiring.discard(key)

        @rule(key=KEYS, value=json_values)
        def set(self, key: str, value: Any) -> None:
            self.run(self.storage.set(key, value))
            self.model[key] = value
            self._forget_ttl(key)

        @precondition(lambda self: supports_ttl)
        @rule(key=KEYS, value=json_values)
        def set_with_ttl(self, key: str, value: Any) -> None:
            self.run(self.storage.set(key, value, ttl=long_ttl))
            self.model[key] = value
            self.expiring.add(key)

        @rule(key=KEYS)
        def get(self, key: str) -> None:
            marker = object()
            got = self.run(self.storage.get(key, marker))
            assert got == self.model.get(key, marker) if key in self.model else got is marker

        @rule(key=KEYS)
        def has(self, key: str) -> None:
            assert self.run(self.storage.has(key)) is (key in self.model)

        @rule(key=KEYS)
        def delete(self, key: str) -> None:
            assert self.run(self.storage.delete(key)) is (key in self.model)
            self.model.pop(key, None)
            self._forget_ttl(key)

        @rule(keys=st.lists(KEYS, max_size=5))
        def get_many(self, keys: list[str]) -> None:
            expected = {k: self.model[k] for k in keys if k in self.model}
            assert self.run(self.storage.get_many(keys)) == expected

        @rule(items=st.dictionaries(KEYS, json_values, max_size=4))
        def set_many(self, items: dict[str, Any]) -> None:
            self.run(self.storage.set_many(items))
            self.model.update(items)
            for key in items:
                self._forget_ttl(key)

        @rule(keys=st.lists(KEYS, max_size=5))
        def delete_many(self, keys: list[str]) -> None:
            expected = len({k for k in keys if k in self.model})
            assert self.run(self.storage.delete_many(keys)) == expected
            for key in keys:
                self.model.pop(key, None)
                self._forget_ttl(key)

        @rule(prefix=PREFIXES)
        def keys(self, prefix: str) -> None:
            async def collect() -> list[str]:
                return sorted([k async for k in self.storage.keys(prefix)])

            assert self.run(collect()) == sorted(k for k in self.model if k.startswith(prefix))

        @rule(prefix=PREFIXES)
        def clear(self, prefix: str) -> None:
            doomed = [k for k in self.model if k.startswith(prefix)]
            assert self.run(self.storage.clear(prefix)) == len(doomed)
            for key in doomed:
                del self.model[key]
                self._forget_ttl(key)

        @precondition(lambda self: supports_ttl)
        @rule(key=KEYS)
        def ttl(self, key: str) -> None:
            if key not in self.model:
                try:
                    self.run(self.storage.ttl(key))
                except KeyNotFoundError:
                    return
                raise AssertionError(f"ttl({key!r}) of a missing key did not raise")
            left = self.run(self.storage.ttl(key))
            if key in self.expiring:
                assert left is not None and 0 < left <= long_ttl
            else:
                assert left is None

        @precondition(lambda self: supports_atomic)
        @rule(key=KEYS, value=json_values)
        def add(self, key: str, value: Any) -> None:
            added = self.run(self.storage.add(key, value))
            assert added is (key not in self.model)
            if added:
                self.model[key] = value
                self._forget_ttl(key)

        @precondition(lambda self: supports_atomic)
        @rule(key=KEYS, amount=st.integers(-1000, 1000))
        def incr(self, key: str, amount: int) -> None:
            current = self.model.get(key, 0)
            if current.__class__ is not int:
                try:
                    self.run(self.storage.incr(key, amount))
                except DecodeError:
                    return
                raise AssertionError(f"incr on {current!r} did not raise DecodeError")
            assert self.run(self.storage.incr(key, amount)) == current + amount
            self.model[key] = current + amount

        @precondition(lambda self: supports_atomic)
        @rule(key=KEYS, item=json_values)
        def update(self, key: str, item: Any) -> None:
            def append(value: Any) -> Any:
                return [value, item]

            expected = [self.model.get(key), item]
            assert self.run(self.storage.update(key, append)) == expected
            self.model[key] = expected
            self._forget_ttl(key)

        @invariant()
        def size_matches(self) -> None:
            # Cheap global check after every step: nothing leaked in, nothing vanished.
            async def count() -> int:
                return len([k async for k in self.storage.keys()])

            assert self.run(count()) == len(self.model)

    StorageMachine.TestCase.settings = settings(
        max_examples=40, stateful_step_count=25, deadline=None
    )
    return StorageMachine
