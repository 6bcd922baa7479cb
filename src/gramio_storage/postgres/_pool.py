"""A small LIFO pool of asyncpg connections, for storages built from a DSN.

``asyncpg.Pool`` spends about as long acquiring and releasing a connection (a timeout scope, a
shielded release task, a reset query) as a loopback query takes: :class:`Pool` takes an idle
connection with a list pop and returns it with an append, doubling throughput
(``bench/bench_postgres.py``). It offers the subset of the ``asyncpg.Pool`` interface the
backend uses, so a caller's own ``asyncpg.Pool`` can stand in its place.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from .._backend_util import positive_seconds
from .._errors import ConfigurationError, StorageClosedError
from .._redact import Redactor

__all__ = ["CONNECT_OPTIONS", "Pool", "abandon", "connector"]

_CLIENT_TIMEOUT_GRACE = 2.0  # seconds the client waits past the server's statement_timeout
# Extra keyword options passed on to asyncpg.connect: all but those the backend sets itself.
CONNECT_OPTIONS = frozenset(inspect.signature(asyncpg.connect).parameters) - {
    "dsn",
    "timeout",
    "command_timeout",
    "loop",
    "connection_class",
    "record_class",
}


def connector(
    dsn: str,
    *,
    timeout: float | None,
    connect_timeout: float,
    min_connections: int,
    max_connections: int,
    options: dict[str, Any],
    redact: Redactor,
) -> Callable[[], Awaitable[Any]]:
    """Validate the connection options; return the call that opens one connection.

    ``timeout`` becomes the server's ``statement_timeout``; a ``password=`` option joins the
    secrets ``redact`` scrubs.

    Raises:
        ConfigurationError: A bad count or duration, or an option asyncpg does not know.
    """
    for name, count, least in (
        ("min_connections", min_connections, 0),
        ("max_connections", max_connections, 1),
    ):
        if count.__class__ is not int or count < least:
            raise ConfigurationError(
                f"{name} must be an int >= {least}, got {count!r}", backend="postgres"
            )
    if min_connections > max_connections:
        raise ConfigurationError(
            f"min_connections ({min_connections}) must not exceed max_connections "
            f"({max_connections})",
            backend="postgres",
        )
    unknown = set(options) - CONNECT_OPTIONS
    if unknown:
        raise ConfigurationError(
            f"Unknown PostgresStorage options {sorted(unknown)}; extra keywords go to "
            "asyncpg.connect (ssl, server_settings, statement_cache_size...)",
            backend="postgres",
        )
    password = options.get("password")
    redact.add(password if isinstance(password, str) else None)
    client_timeout = None
    seconds = positive_seconds(timeout, "timeout", backend="postgres")
    if seconds is not None:
        # The server enforces the limit: it aborts the statement, so a timed-out write is
        # never applied later and the connection stays usable. The client-side timeout, a
        # little longer, only catches a server that went silent.
        settings = dict(options.get("server_settings") or {})
        settings.setdefault("statement_timeout", str(max(1, round(seconds * 1e3))))
        options = {**options, "server_settings": settings}
        client_timeout = seconds + _CLIENT_TIMEOUT_GRACE
    return functools.partial(
        asyncpg.connect,
        dsn,
        timeout=positive_seconds(connect_timeout, "connect_timeout", backend="postgres"),
        command_timeout=client_timeout,
        **options,
    )


def _closed_error() -> StorageClosedError:
    return StorageClosedError("This PostgresStorage is closed", backend="postgres")


def healthy(con: Any, exc: BaseException) -> bool:
    """Whether ``con`` can serve the next caller after ``exc`` interrupted its last use.

    After a server-side error, an error from the caller's own code, a cancellation or a
    timeout, the connection is fine: on cancellation and timeout asyncpg has sent the server a
    cancel request (so the abandoned statement does not go on to write later), and the next
    query on the connection first waits for it to be acknowledged. After an I/O or protocol
    error, or if asyncpg gave up on it, the connection is dropped.
    """
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.InternalClientError)) or (
        isinstance(exc, OSError) and not isinstance(exc, TimeoutError)
    ):
        return False
    return not con.is_closed() and not con.is_in_transaction()


def abandon(con: Any) -> None:
    """Drop ``con`` at once, without awaiting anything, even after its event loop closed.

    ``Connection.terminate()`` asks the loop to close the socket; when that loop is gone (a
    second ``asyncio.run()``), asyncio raises ``RuntimeError`` and the socket would stay open
    until garbage collection. Then the transport is finished here, which closes the socket.
    """
    try:
        con.terminate()
    except RuntimeError:  # "Event loop is closed"
        transport = getattr(con, "_transport", None)
        finish = getattr(transport, "_call_connection_lost", None)
        if finish is not None:
            with contextlib.suppress(Exception):
                finish(None)  # closes the socket in a finally, whatever the protocol says


class Pool:
    """At most ``max_size`` asyncpg connections, opened on demand, reused most recent first.

    Connections idle longer than ``max_idle`` seconds are closed instead of reused (a NAT or
    firewall may have dropped them silently); see :func:`healthy` for failed calls.
    """

    def __init__(
        self, connect: Callable[[], Awaitable[Any]], max_size: int, max_idle: float = 300.0
    ) -> None:
        self._connect = connect
        self._max_size = max_size
        self._max_idle = max_idle
        self._idle: list[tuple[Any, float]] = []  # (connection, released at), LIFO
        self._size = 0  # idle + in use + being opened
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._closed = False

    async def fill(self, count: int) -> None:
        """Open ``count`` connections now (at least one: this checks the server is there)."""
        opened: list[Any] = []
        try:
            for _ in range(max(count, 1) - self._size):
                opened.append(await self._acquire())  # noqa: PERF401 - keep what opened
        finally:
            for con in opened:
                self._release(con)

    async def _acquire(self) -> Any:
        idle = self._idle
        while idle:
            con, since = idle.pop()
            if not con.is_closed() and time.monotonic() - since < self._max_idle:
                return con
            self._discard(con)
        while True:
            if self._closed:
                raise _closed_error()
            if self._size < self._max_size:
                self._size += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._size -= 1
                    self._wake()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                con = await waiter
            except asyncio.CancelledError:
                # Handed a connection just as we were cancelled: pass it on, do not leak it.
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self._release(waiter.result())
                raise
            if con is not None:
                return con
            # None: a slot was freed (a connection dropped); go round and open one.

    def _release(self, con: Any) -> None:
        if self._closed:
            self._discard(con)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(con)
                return
        self._idle.append((con, time.monotonic()))

    def _discard(self, con: Any) -> None:
        abandon(con)
        self._size -= 1
        self._wake()

    def _wake(self) -> None:
        """Tell one waiter that a slot is free, so it opens a connection itself."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _recycle(self, con: Any, exc: BaseException) -> None:
        if healthy(con, exc):
            self._release(con)
        else:
            self._discard(con)

    async def _run(self, method: str, query: str, args: tuple[Any, ...]) -> Any:
        """Run ``con.<method>(query, *args)`` on a pooled connection, recycling it after.

        One method behind the four query methods rather than four copies: the extra call costs
        about 0.1-0.2 µs of CPU per statement, next to 50 µs or more for a loopback query.
        """
        con = await self._acquire()
        try:
            result = await getattr(con, method)(query, *args)
        except BaseException as e:
            self._recycle(con, e)
            raise
        self._release(con)
        return result

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._run("fetchval", query, args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return await self._run("fetchrow", query, args)

    async def fetch(self, query: str, *args: Any) -> Any:
        return await self._run("fetch", query, args)

    async def execute(self, query: str, *args: Any) -> Any:
        return await self._run("execute", query, args)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        """Lend one connection for several statements (a transaction)."""
        con = await self._acquire()
        try:
            yield con
        except BaseException as e:
            self._recycle(con, e)
            raise
        self._release(con)

    async def close(self) -> None:
        """Close idle connections; ones in use are dropped when they come back."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(_closed_error())
        idle, self._idle = self._idle, []
        self._size -= len(idle)
        results = await asyncio.gather(
            *(con.close(timeout=5) for con, _ in idle), return_exceptions=True
        )
        for (con, _), result in zip(idle, results, strict=True):
            if isinstance(result, BaseException):
                abandon(con)  # a dead server: nothing to say goodbye to

    def terminate(self) -> None:
        """Drop every idle connection at once, awaiting nothing (failed open, loop change).

        Safe to call from another event loop than the pool's, after that loop has closed:
        waiters of a dead loop are forgotten, connections are abandoned.
        """
        self._closed = True
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            with contextlib.suppress(RuntimeError):  # a future of a closed loop
                if not waiter.done():
                    waiter.set_exception(_closed_error())
        idle, self._idle = self._idle, []
        self._size -= len(idle)
        for con, _ in idle:
            abandon(con)
