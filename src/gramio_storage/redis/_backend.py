"""The Redis backend: the Backend contract on native commands, one server or a Redis Cluster.

Commands go through a command path object (``execute``/``batch``): on a single server the
automatic pipeline (:class:`~._pipeline.Pipeline`), which sends the commands of concurrent tasks
together on one connection; on a cluster, or with ``pipelining=False``, redis-py's own client
(:class:`~._client.DirectCommands`). Driver exceptions become the library's in one place,
:class:`~._errors.ErrorMap`.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from redis import exceptions as rx
from redis.asyncio import Redis, RedisCluster

from .._backend import GONE, Backend, Capabilities, Entry, parse_int
from .._errors import BackendError, BackendUnavailableError, StorageClosedError
from .._redact import Redactor
from ._client import DirectCommands, clone, describe, reply_timeout
from ._errors import UNAVAILABLE, ErrorMap
from ._pipeline import Pipeline
from ._scripts import BULK_READ, BULK_WRITE, CAS, INCR_TTL, Script, pack_entries, pack_keys

__all__ = ["MAX_TTL", "RedisBackend"]

# Redis adds a PX expiry to its clock in signed 64-bit milliseconds and refuses an overflow
# ("invalid expire time"); 10**12 s (about 31,700 years, 10**15 ms) stays far below 2**63 ms.
MAX_TTL = 1e12
_SCAN_COUNT = 1000  # keys the server examines per SCAN call: fewer round trips on big databases
_MAX_CAS_ATTEMPTS = 1000  # an update losing this many races in a row gives up with an error
_INT64 = range(-(2**63), 2**63)

_CAPS = Capabilities(
    name="redis", atomic=True, ttl=True, max_ttl=MAX_TTL, persistent=True, shared=True
)


class Commands(Protocol):
    """What the backend needs from a command path (pipeline or redis-py's client)."""

    async def execute(self, *args: Any, **kwargs: Any) -> Any: ...
    async def batch(
        self, commands: Sequence[Sequence[Any]], *, raise_on_error: bool = True
    ) -> list[Any]: ...
    async def close(self, *, final: bool = True) -> None: ...


async def _keep(path: Commands) -> None:
    """Wait forever; drop ``path``'s connections when cancelled (the loop shuts down)."""
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        with contextlib.suppress(Exception):
            await path.close(final=False)


def _glob_escape(prefix: str) -> str:
    """Escape Redis glob metacharacters so ``MATCH`` treats the prefix literally."""
    for char in "\\*?[]":
        prefix = prefix.replace(char, "\\" + char)
    return prefix


def _ms(ttl: float) -> int:
    """Seconds to whole milliseconds for ``PX`` (rounded, at least 1)."""
    ms = round(ttl * 1000)
    return ms if ms > 0 else 1


class RedisBackend(Backend):
    """Bytes in Redis strings under the bare key, expiry by the server (``SET ... PX``).

    Args:
        client: A ``redis.asyncio.Redis`` or ``RedisCluster``; also where the pipeline takes
            its connection options from.
        owned: The backend made the client and closes it in :meth:`close`.
        pipelining: Send concurrent commands together on one connection (single server only).
        rebuild: Makes a fresh client with the same options; used for an owned client when the
            storage moves to another event loop.
        redactor: Secrets to scrub from error messages.
    """

    capabilities = _CAPS

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        owned: bool = False,
        pipelining: bool = True,
        rebuild: Callable[[], Redis | RedisCluster] | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self._client = client
        self._owned = owned
        self._rebuild = rebuild
        self.redactor = redactor if redactor is not None else Redactor()
        self.reply_timeout = reply_timeout(client)
        self._cluster = isinstance(client, RedisCluster)
        self._pipeline = pipelining and isinstance(client, Redis) and Pipeline.supports(client)
        # One command path per event loop that used the backend, each closed by a keeper task
        # when its loop shuts down (asyncio.run() cancels every task first), so an unclosed
        # storage leaks no socket, and a storage used from a second loop (another thread's
        # asyncio.run()) never touches the first loop's connections.
        self._paths: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[Commands, asyncio.Task[None]]
        ] = weakref.WeakKeyDictionary()
        self._current: tuple[asyncio.AbstractEventLoop | None, Commands | None] = (None, None)
        self._client_used = False
        self._closed = False

    @property
    def client(self) -> Redis | RedisCluster:
        """The redis-py client (for commands this library does not wrap)."""
        return self._client

    @property
    def cluster(self) -> bool:
        """Whether the backend talks to a Redis Cluster."""
        return self._cluster

    @property
    def pipelined(self) -> bool:
        """Whether commands go through the automatic pipeline."""
        return self._pipeline

    def describe(self) -> dict[str, object]:
        fields: dict[str, object] = {"server": describe(self._client)}
        if self._cluster:
            fields["cluster"] = True
        elif not self._pipeline:
            fields["pipelining"] = False
        return fields

    # ------------------------------------------------------------------ loops and lifecycle

    def _live(self) -> Commands:
        """The command path of the running event loop."""
        loop = asyncio.get_running_loop()
        current = self._current  # one tuple: read atomically even if two threads use us
        if current[0] is loop:
            return current[1]  # type: ignore[return-value]
        return self._switch(loop)

    def _switch(self, loop: asyncio.AbstractEventLoop) -> Commands:
        if self._closed:
            raise StorageClosedError("This Redis storage was closed", backend="redis")
        held = self._paths.get(loop)
        if held is None:
            # Each asyncio.run() is a new loop: forget those that ended (their keeper closed
            # the connections), or one entry per loop ever used would stay behind.
            for gone in [old for old in self._paths if old.is_closed()]:
                del self._paths[gone]
            path = self._new_path()
            keeper = loop.create_task(_keep(path), name="gramio-storage redis keeper")
            held = self._paths[loop] = (path, keeper)
        self._current = (loop, held[0])
        return held[0]

    def _new_path(self) -> Commands:
        first = not self._client_used
        self._client_used = True
        client = self._client
        if self._pipeline:
            # The pipeline opens its own connection from the client's options; the client
            # itself stays idle unless the caller uses it (and is closed with us if ours).
            return Pipeline(client, close_client=self._owned and first)  # type: ignore[arg-type]
        if first:
            return DirectCommands(client, owned=self._owned)
        # Another event loop: redis-py's pools are bound to the loop that opened them.
        if self._rebuild is not None:
            return DirectCommands(self._rebuild(), owned=True)
        if isinstance(client, Redis):
            return DirectCommands(clone(client), owned=True)
        raise BackendUnavailableError(
            "A RedisCluster client you passed cannot be used from a second event loop; "
            "create the storage with RedisStorage.from_url(..., cluster=True) instead",
            backend="redis",
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._current = (None, None)
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        mine: Commands | None = None
        for loop, (path, keeper) in list(self._paths.items()):
            if loop is running:
                keeper.cancel()
                mine = path
            elif not loop.is_closed():
                # Another thread's loop: its keeper closes that path there.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(keeper.cancel)
        if mine is not None:
            with ErrorMap(self, "close"):
                await mine.close()
        elif self._owned and not self._client_used:
            await self._client.aclose()

    # ------------------------------------------------------------------ required

    async def get(self, key: str) -> bytes | None:
        with ErrorMap(self, "get", key):
            return await self._live().execute("GET", key)  # type: ignore[no-any-return]

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        with ErrorMap(self, "set", key):
            if ttl is None:
                await self._live().execute("SET", key, data)
            else:
                await self._live().execute("SET", key, data, "PX", _ms(ttl))

    async def delete(self, key: str) -> bool:
        with ErrorMap(self, "delete", key):
            return await self._live().execute("UNLINK", key) == 1  # type: ignore[no-any-return]

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        async for page in self._scan_pages(prefix):
            for raw in page:
                yield raw.decode("utf-8", "replace")

    async def _scan_pages(self, prefix: str) -> AsyncIterator[list[bytes]]:
        """The keys starting with ``prefix``, page by page (every master of a cluster)."""
        match = ("MATCH", _glob_escape(prefix) + "*") if prefix else ()
        # MATCH already filters; the byte check guards against any glob dialect surprise
        # (Valkey, proxies) ever widening the match beyond the literal prefix.
        literal = prefix.encode()
        with ErrorMap(self, f"scan for prefix {prefix!r}"):
            cmds = self._live()
            nodes: list[Any] = [None]
            if isinstance(self._client, RedisCluster):
                await self._client.initialize()
                nodes = list(self._client.get_primaries())
            for node in nodes:
                cursor = 0
                while True:
                    if node is None:
                        cursor, keys = await cmds.execute(
                            "SCAN", cursor, *match, "COUNT", _SCAN_COUNT
                        )
                    else:
                        cursors, keys = await cmds.execute(
                            "SCAN", cursor, *match, "COUNT", _SCAN_COUNT, target_nodes=node
                        )
                        cursor = next(iter(cursors.values()))
                    page = [k for k in keys if k.startswith(literal)]
                    if page:
                        yield page
                    cursor = int(cursor)
                    if not cursor:
                        break
                    cmds = self._live()

    # ------------------------------------------------------------------ optional: plain

    async def has(self, key: str) -> bool:
        with ErrorMap(self, "has", key):
            return await self._live().execute("EXISTS", key) == 1  # type: ignore[no-any-return]

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        with ErrorMap(self, "get_many", keys[0] if keys else None):
            cmds = self._live()
            groups = self._by_slot(keys) if self._cluster else None
            if groups is None or len(groups) == 1:
                return await cmds.execute("MGET", *keys)  # type: ignore[no-any-return]
            replies = await cmds.batch([("MGET", *[keys[i] for i in g]) for g in groups])
            found: list[bytes | None] = [None] * len(keys)
            for members, values in zip(groups, replies, strict=True):
                for i, value in zip(members, values, strict=True):
                    found[i] = value
            return found

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        with ErrorMap(self, "set_many", items[0][0] if items else None):
            cmds = self._live()
            if ttl is None and not self._cluster:
                await cmds.execute("MSET", *[part for item in items for part in item])
                return
            extra: tuple[Any, ...] = () if ttl is None else ("PX", _ms(ttl))
            await cmds.batch([("SET", key, data, *extra) for key, data in items])

    async def delete_many(self, keys: Sequence[str]) -> int:
        return await self._unlink(list(dict.fromkeys(keys)))

    async def _unlink(self, keys: Sequence[str | bytes]) -> int:
        first = keys[0] if keys else None
        with ErrorMap(self, "delete_many", first if isinstance(first, str) else None):
            cmds = self._live()
            groups = self._by_slot(keys) if self._cluster else None
            if groups is None or len(groups) == 1:
                return await cmds.execute("UNLINK", *keys)  # type: ignore[no-any-return]
            replies = await cmds.batch([("UNLINK", *[keys[i] for i in g]) for g in groups])
            return sum(replies)

    async def clear(self, prefix: str) -> int:
        # SCAN + UNLINK page by page: memory stays bounded, the server never blocks on a huge
        # DEL, and keys outside the prefix (other bots sharing the database) are never touched.
        deleted = 0
        async for page in self._scan_pages(prefix):
            deleted += await self._unlink(page)
        return deleted

    async def ttl(self, key: str) -> float | None:
        with ErrorMap(self, "ttl", key):
            ms = await self._live().execute("PTTL", key)
        if ms == -2:
            raise self.not_found(key)
        return None if ms == -1 else ms / 1000

    async def scan_ttl(self, prefix: str) -> AsyncIterator[tuple[str, float | None]]:
        # One round trip of PTTLs per SCAN page (pipelined), not one per key.
        async for page in self._scan_pages(prefix):
            with ErrorMap(self, f"scan_ttl for prefix {prefix!r}"):
                replies = await self._live().batch([("PTTL", k) for k in page])
            for raw, ms in zip(page, replies, strict=True):
                if ms != -2:
                    yield raw.decode("utf-8", "replace"), None if ms == -1 else ms / 1000

    async def get_entries(self, keys: Sequence[str]) -> list[tuple[bytes | None, float | None]]:
        if not keys:
            return []
        with ErrorMap(self, "bulk read", keys[0]):
            cmds = self._live()
            if self._cluster:
                # A cluster cannot run one script over keys in different slots: GET + PTTL
                # per key, pipelined per node. A key of another type reads as missing.
                commands = [c for k in keys for c in (("GET", k), ("PTTL", k))]
                replies = await cmds.batch(commands, raise_on_error=False)
                replies = [None if isinstance(r, Exception) else r for r in replies]
            else:
                replies = await self._eval(cmds, BULK_READ, None, pack_keys(keys))
        out: list[tuple[bytes | None, float | None]] = []
        for i in range(0, len(replies), 2):
            value, ms = replies[i], replies[i + 1]
            if value is None:
                out.append((None, None))
            else:
                out.append((value, None if ms == -1 else GONE if ms == -2 else ms / 1000))
        return out

    async def set_entries(self, entries: Sequence[Entry], *, overwrite: bool = True) -> list[bool]:
        if not entries:
            return []
        with ErrorMap(self, "bulk write", entries[0][0]):
            cmds = self._live()
            if self._cluster:
                flag = () if overwrite else ("NX",)
                commands = [
                    ("SET", k, data, *flag)
                    if ttl is None
                    else ("SET", k, data, "PX", _ms(ttl), *flag)
                    for k, data, ttl in entries
                ]
                return [bool(r) for r in await cmds.batch(commands)]
            packed = pack_entries([(k, d, 0 if t is None else _ms(t)) for k, d, t in entries])
            replies = await self._eval(cmds, BULK_WRITE, None, "0" if overwrite else "1", packed)
        return [bool(r) for r in replies]

    # ------------------------------------------------------------------ optional: atomic

    async def add(self, key: str, data: bytes, ttl: float | None) -> bool:
        with ErrorMap(self, "add", key):
            if ttl is None:
                return bool(await self._live().execute("SET", key, data, "NX"))
            return bool(await self._live().execute("SET", key, data, "NX", "PX", _ms(ttl)))

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        if amount in _INT64:
            with ErrorMap(self, "incr", key):
                cmds = self._live()
                try:
                    if ttl is None:
                        return await cmds.execute("INCRBY", key, amount)  # type: ignore[no-any-return]
                    return await self._eval(cmds, INCR_TTL, key, amount, _ms(ttl))  # type: ignore[no-any-return]
                except rx.ResponseError as e:
                    if isinstance(e, UNAVAILABLE):  # CLUSTERDOWN, TRYAGAIN
                        raise
                    # Not a plain 64-bit integer (a JSON float, text, an overflow): the
                    # compare-and-set path below decodes it, raising DecodeError or counting
                    # past 64 bits.
        async with self._key_lock(key):
            for _ in range(_MAX_CAS_ATTEMPTS):
                old = await self.get(key)
                if old is None:
                    value, expiry = amount, ("" if ttl is None else _ms(ttl))
                else:
                    value, expiry = parse_int(self, key, old) + amount, "keep"
                if await self._cas(key, old, str(value).encode(), expiry, "incr"):
                    return value
        raise self._contention(key, "incr")

    async def update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        expiry: int | str = "" if ttl is None else _ms(ttl)
        # The lock serialises this process's own updaters of the key, so they queue instead of
        # failing each other's compare-and-set; other processes are handled by the CAS retry.
        async with self._key_lock(key):
            for _ in range(_MAX_CAS_ATTEMPTS):
                old = await self.get(key)
                if await self._cas(key, old, fn(old), expiry, "update"):
                    return
        raise self._contention(key, "update")

    # ------------------------------------------------------------------ helpers

    async def _eval(self, cmds: Commands, script: Script, key: str | None, *args: Any) -> Any:
        keys = (1, key) if key is not None else (0,)
        try:
            return await cmds.execute("EVALSHA", script.sha, *keys, *args)
        except rx.NoScriptError:
            # First use on this server (or it restarted and lost its script cache): EVAL
            # runs the script and caches it, so later calls are EVALSHA again.
            return await cmds.execute("EVAL", script.source, *keys, *args)

    async def _cas(
        self, key: str, old: bytes | None, new: bytes, expiry: int | str, op: str
    ) -> bool:
        with ErrorMap(self, op, key):
            cmds = self._live()
            if old is None:
                done = await self._eval(cmds, CAS, key, "0", "", new, expiry)
            else:
                done = await self._eval(cmds, CAS, key, "1", old, new, expiry)
        return done == 1  # type: ignore[no-any-return]

    def _contention(self, key: str, op: str) -> BackendError:
        return BackendError(
            f"Redis {op} of key {key!r} gave up after {_MAX_CAS_ATTEMPTS} attempts: other "
            "writers changed the key every time; nothing was written",
            key=key,
            backend="redis",
        )

    def _by_slot(self, keys: Sequence[str | bytes]) -> list[list[int]]:
        """Group key positions by cluster hash slot (a multi-key command must stay in one)."""
        keyslot = self._client.keyslot  # type: ignore[union-attr]
        groups: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(keyslot(key), []).append(i)
        return list(groups.values())
