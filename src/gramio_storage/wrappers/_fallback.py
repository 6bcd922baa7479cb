"""Fallback tiers: read from the first tier that has a key, write to every tier.

GramIO's ``withFallbackStorages(storages)`` reads the first *truthy* value and writes with
``Promise.any``. Here a tier *has* a key when its backend returns bytes for it, so a stored
``0``, ``False``, ``""`` or ``None`` counts; writes and deletes go to every tier, under a
failure policy; when a tier is unreachable the next one serves, and an unreachable tier is
skipped for ``retry_after`` seconds instead of being waited on for every call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Literal, TypeVar

from .._backend import Backend, Capabilities
from .._errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    KeyNotFoundError,
)
from .._storage import BaseStorage

__all__ = ["FAILOVER_ERRORS", "FallbackBackend", "Policy"]

log = logging.getLogger("gramio_storage.wrappers.fallback")

Policy = Literal["primary", "all"]
T = TypeVar("T")

# The errors that mean "this tier is down, try the next one"; anything else is a real answer.
FAILOVER_ERRORS: tuple[type[BaseException], ...] = (BackendUnavailableError, BackendTimeoutError)


class _Tier:
    __slots__ = ("backend", "down_until", "failures", "name", "owner")

    def __init__(self, backend: Backend, owner: BaseStorage | None) -> None:
        self.backend = backend
        self.owner = owner
        self.name = backend.capabilities.name
        self.down_until = 0.0
        self.failures = 0


class FallbackBackend(Backend):
    """Tiers of backends, fastest or most authoritative first.

    * Reads (``get``, ``get_many``, ``has``, ``ttl``) come from the first tier that has the key;
      with ``backfill`` the value is then copied (with its TTL) into the tiers before it.
    * Writes and deletes (``set``, ``set_many``, ``delete``, ``delete_many``, ``clear``) go to
      every tier, primary first. ``policy="primary"``: the first reachable tier must succeed,
      failures of the others are logged and counted in :attr:`failures`. ``policy="all"``:
      every tier must succeed (the first error is raised once every tier was tried).
    * Atomic operations (``add``, ``incr``, ``update``) run on the primary only: atomicity is
      the primary's (:attr:`Capabilities.atomic` is the primary's). Their result is then written
      to the other tiers like a ``set``. With ``atomic_failover=True`` they run on the next tier
      while the primary is down (atomic on that tier only); otherwise they raise.
    * A tier that raised :class:`~gramio_storage.BackendUnavailableError` or
      :class:`~gramio_storage.BackendTimeoutError` is skipped for ``retry_after`` seconds, and
      keys written while it was skipped are copied back to it when it answers again (up to
      ``max_resync`` keys; beyond that a warning says it may be stale).
    * ``keys()`` lists the union of the tiers; ``clear``/``delete_many`` report the largest
      count of any tier (exact when one tier holds every key, as in the stacks documented).
    """

    def __init__(
        self,
        tiers: Sequence[Backend],
        *,
        owners: Sequence[BaseStorage | None] | None = None,
        policy: Policy = "primary",
        backfill: bool = True,
        atomic_failover: bool = False,
        retry_after: float = 1.0,
        max_resync: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(tiers) < 2:
            raise ConfigurationError("FallbackBackend needs at least two tiers")
        if policy not in ("primary", "all"):
            raise ConfigurationError(f"policy must be 'primary' or 'all', got {policy!r}")
        owners = list(owners) if owners is not None else [None] * len(tiers)
        self._tiers = [_Tier(b, o) for b, o in zip(tiers, owners, strict=True)]
        self.policy: Policy = policy
        self.backfill = backfill
        self.atomic_failover = atomic_failover
        self.retry_after = retry_after
        self._max_resync = max_resync
        self._clock = clock
        self._dirty: list[dict[str, None]] = [{} for _ in tiers]
        self._overflowed = [False] * len(tiers)
        self._resyncing: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.capabilities = _capabilities([t.backend.capabilities for t in self._tiers])

    @property
    def tiers(self) -> list[Backend]:
        """The tiers' backends, primary first."""
        return [t.backend for t in self._tiers]

    @property
    def failures(self) -> dict[str, int]:
        """Failed calls per tier (``"0:redis"``, ``"1:sqlite"``) since this backend was made."""
        return {f"{i}:{t.name}": t.failures for i, t in enumerate(self._tiers)}

    def describe(self) -> dict[str, object]:
        return {"tiers": [t.name for t in self._tiers], "policy": self.policy}

    # ------------------------------------------------------------------ tier health

    def _up(self) -> list[int]:
        now = self._clock()
        return [i for i, t in enumerate(self._tiers) if t.down_until <= now]

    def _failed(self, index: int, error: BaseException, op: str) -> None:
        tier = self._tiers[index]
        tier.failures += 1
        if isinstance(error, FAILOVER_ERRORS):
            tier.down_until = self._clock() + self.retry_after
        log.warning("tier %d (%s) failed %s: %s", index, tier.name, op, error)

    def _answered(self, index: int) -> None:
        if self._dirty[index] and index not in self._resyncing:
            self._resyncing.add(index)
            task = asyncio.ensure_future(self._resync(index))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _mark_dirty(self, index: int, keys: Sequence[str]) -> None:
        dirty = self._dirty[index]
        for key in keys:
            if len(dirty) >= self._max_resync:
                if not self._overflowed[index]:
                    self._overflowed[index] = True
                    log.warning(
                        "tier %d (%s) missed more than %d writes: it may serve stale values",
                        index,
                        self._tiers[index].name,
                        self._max_resync,
                    )
                return
            dirty[key] = None

    async def _resync(self, index: int) -> None:
        """Copy the keys a tier missed from the first other reachable tier back into it."""
        try:
            dirty = self._dirty[index]
            while dirty:
                batch = list(dirty)[:500]
                sources = [i for i in self._up() if i != index]
                if not sources:
                    return
                entries = await self._tiers[sources[0]].backend.get_entries(batch)
                target = self._tiers[index].backend
                present = [
                    (k, d, t)
                    for k, (d, t) in zip(batch, entries, strict=True)
                    if d is not None and (t is None or t > 0)
                ]
                gone = [
                    k
                    for k, (d, t) in zip(batch, entries, strict=True)
                    if d is None or (t is not None and t <= 0)
                ]
                if present:
                    await target.set_entries(present)
                if gone:
                    await target.delete_many(gone)
                for key in batch:
                    dirty.pop(key, None)
            log.info("tier %d (%s) is back and resynced", index, self._tiers[index].name)
        except Exception as e:
            self._failed(index, e, "resync")
        finally:
            self._resyncing.discard(index)

    # ------------------------------------------------------------------ reads

    async def _first(self, call: Callable[[Backend], Awaitable[T]], op: str) -> tuple[int, T]:
        """Call the reachable tiers in order until one answers; the index and the answer."""
        error: BaseException | None = None
        for i in self._up() or range(len(self._tiers)):
            try:
                result = await call(self._tiers[i].backend)
            except FAILOVER_ERRORS as e:
                self._failed(i, e, op)
                error = error or e
                continue
            self._answered(i)
            return i, result
        assert error is not None
        raise error

    async def get(self, key: str) -> bytes | None:
        order = self._up() or list(range(len(self._tiers)))
        error: BaseException | None = None
        answered: list[int] = []
        for i in order:
            try:
                data = await self._tiers[i].backend.get(key)
            except FAILOVER_ERRORS as e:
                self._failed(i, e, "get")
                error = error or e
                continue
            self._answered(i)
            if data is not None:
                if self.backfill and answered:
                    await self._backfill(i, answered, [key])
                return data
            answered.append(i)
        if not answered and error is not None:
            raise error
        return None

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        found: list[bytes | None] = [None] * len(keys)
        missing = list(range(len(keys)))
        answered: list[int] = []
        error: BaseException | None = None
        for i in self._up() or list(range(len(self._tiers))):
            try:
                values = await self._tiers[i].backend.get_many([keys[j] for j in missing])
            except FAILOVER_ERRORS as e:
                self._failed(i, e, "get_many")
                error = error or e
                continue
            self._answered(i)
            hits = [j for j, data in zip(missing, values, strict=True) if data is not None]
            for j, data in zip(missing, values, strict=True):
                found[j] = data
            if hits and answered and self.backfill:
                await self._backfill(i, answered, [keys[j] for j in hits])
            missing = [j for j in missing if found[j] is None]
            answered.append(i)
            if not missing:
                break
        if not answered and error is not None:
            raise error
        return found

    async def _backfill(self, source: int, targets: list[int], keys: list[str]) -> None:
        """Copy ``keys`` (with their TTLs) from tier ``source`` into the ``targets`` before it."""
        try:
            entries = await self._tiers[source].backend.get_entries(keys)
        except Exception as e:
            self._failed(source, e, "backfill")
            return
        rows = [
            (k, d, t)
            for k, (d, t) in zip(keys, entries, strict=True)
            if d is not None and (t is None or t > 0)
        ]
        for i in targets:
            try:
                await self._tiers[i].backend.set_entries(rows)
            except Exception as e:
                self._failed(i, e, "backfill")

    async def has(self, key: str) -> bool:
        return await self.get(key) is not None

    async def ttl(self, key: str) -> float | None:
        missing: KeyNotFoundError | None = None
        for i in self._up() or list(range(len(self._tiers))):
            try:
                return await self._tiers[i].backend.ttl(key)
            except KeyNotFoundError as e:
                missing = missing or e
            except FAILOVER_ERRORS as e:
                self._failed(i, e, "ttl")
        raise missing or self.not_found(key)

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        seen: set[str] = set()
        listed = False
        error: BaseException | None = None
        for i in self._up() or list(range(len(self._tiers))):
            try:
                async for key in self._tiers[i].backend.scan(prefix):
                    if key not in seen:
                        seen.add(key)
                        yield key
            except FAILOVER_ERRORS as e:
                self._failed(i, e, "scan")
                error = error or e
                continue
            listed = True
        if not listed and error is not None:
            raise error

    # ------------------------------------------------------------------ writes

    async def _all(
        self, call: Callable[[Backend], Awaitable[T]], op: str, keys: Sequence[str] = ()
    ) -> list[T]:
        """Run a write on every reachable tier in order, under the failure policy.

        Returns the answers of the tiers that succeeded, primary first. Keys written while a
        tier was skipped or failing are remembered for its resync.
        """
        up = self._up()
        for i in range(len(self._tiers)):
            if i not in up:
                self._mark_dirty(i, keys)
        if not up:
            up = list(range(len(self._tiers)))
        # In order, primary first: a later tier never holds a write the primary refused
        # before it, and local tiers cost no task each (gather would cost more than memory).
        results: list[T | BaseException] = []
        for i in up:
            try:
                results.append(await call(self._tiers[i].backend))
            except Exception as e:
                results.append(e)
        ok: list[T] = []
        errors: list[tuple[int, BaseException]] = []
        for i, result in zip(up, results, strict=True):
            if isinstance(result, BaseException):
                errors.append((i, result))
            else:
                self._answered(i)
                ok.append(result)
        if not errors:
            return ok
        # The tier that must succeed: every tier ("all"), or the first tier that is not down.
        must = {i for i, _ in errors} if self.policy == "all" else set()
        if self.policy == "primary":
            for i, result in zip(up, results, strict=True):
                if isinstance(result, FAILOVER_ERRORS):
                    continue
                must = {i}
                break
            else:
                must = {up[0]}
        for i, error in errors:
            self._failed(i, error, op)
            if isinstance(error, FAILOVER_ERRORS):
                self._mark_dirty(i, keys)
        for i, error in errors:
            if i in must:
                raise error
        return ok

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        await self._all(lambda b: b.set(key, data, ttl), "set", (key,))

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        await self._all(lambda b: b.set_many(items, ttl), "set_many", [k for k, _ in items])

    async def delete(self, key: str) -> bool:
        return any(await self._all(lambda b: b.delete(key), "delete", (key,)))

    async def delete_many(self, keys: Sequence[str]) -> int:
        return max(await self._all(lambda b: b.delete_many(keys), "delete_many", keys), default=0)

    async def clear(self, prefix: str) -> int:
        return max(await self._all(lambda b: b.clear(prefix), "clear"), default=0)

    # ------------------------------------------------------------------ atomic: primary only

    async def _atomic(self, call: Callable[[Backend], Awaitable[T]], op: str) -> tuple[int, T]:
        if not self.atomic_failover:
            primary = self._tiers[0]
            try:
                result = await call(primary.backend)
            except FAILOVER_ERRORS as e:
                self._failed(0, e, op)
                raise
            self._answered(0)
            return 0, result
        return await self._first(call, op)

    async def _replicate(self, source: int, key: str) -> None:
        """After an atomic op on tier ``source``, copy the key's new state to the others."""
        try:
            ((data, ttl),) = await self._tiers[source].backend.get_entries([key])
        except Exception as e:
            self._failed(source, e, "replicate")
            return
        others = [i for i in self._up() if i != source]
        for i in range(len(self._tiers)):
            if i != source and i not in others:
                self._mark_dirty(i, [key])
        for i in others:
            backend = self._tiers[i].backend
            try:
                if data is None or (ttl is not None and ttl <= 0):
                    await backend.delete(key)
                else:
                    await backend.set(key, data, ttl)
            except Exception as e:
                self._failed(i, e, "replicate")
                if isinstance(e, FAILOVER_ERRORS):
                    self._mark_dirty(i, [key])
                elif self.policy == "all":
                    raise

    async def add(self, key: str, data: bytes, ttl: float | None) -> bool:
        source, added = await self._atomic(lambda b: b.add(key, data, ttl), "add")
        if added:
            await self._replicate(source, key)
        return added

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        source, value = await self._atomic(lambda b: b.incr(key, amount, ttl), "incr")
        await self._replicate(source, key)
        return value

    async def update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        source, _ = await self._atomic(lambda b: b.update(key, fn, ttl), "update")
        await self._replicate(source, key)

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for tier in self._tiers:
            if tier.owner is not None:
                await tier.owner.close()
            else:
                await tier.backend.close()


def _capabilities(tiers: list[Capabilities]) -> Capabilities:
    primary = tiers[0]
    key_limits = [c.max_key_bytes for c in tiers if c.max_key_bytes is not None]
    value_limits = [c.max_value_bytes for c in tiers if c.max_value_bytes is not None]
    max_ttls = [c.max_ttl for c in tiers if c.max_ttl is not None]
    return Capabilities(
        name="+".join(c.name for c in tiers),
        atomic=primary.atomic,
        atomic_ops=primary.atomic_ops,
        ttl=primary.ttl,
        min_ttl=max(c.min_ttl for c in tiers),
        max_ttl=min(max_ttls) if max_ttls else None,
        max_key_bytes=min(key_limits) if key_limits else None,
        max_value_bytes=min(value_limits) if value_limits else None,
        lists_ttls=False,
        persistent=any(c.persistent for c in tiers),
        shared=primary.shared,
        eventually_consistent=any(c.eventually_consistent for c in tiers),
        nonblocking=False,
    )
