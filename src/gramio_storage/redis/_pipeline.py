"""Automatic pipelining: the commands of concurrent tasks share one connection and its writes.

A bot handles many updates at once, each awaiting its storage calls. With one pooled connection
per command every call pays a full round trip and a pool checkout; here every command goes to
one connection instead:

* **Writes.** A command issued while nothing is in flight is written at once (a sequential
  caller waits no longer than with redis-py). A command issued while others are in flight is
  queued, and the queue is written in one ``transport.write`` at the end of the event-loop
  iteration, so a wave of tasks woken by one batch of replies sends one batch of commands.
* **Replies** are parsed by hiredis in the protocol's ``data_received`` and resolve the waiting
  futures in order; no reader task, no per-command coroutine or lock.
* **Faults.** A cancelled caller's reply is still read and dropped (its future is simply done),
  so replies never go out of step. A lost connection fails every command in flight with
  redis-py's ``ConnectionError`` (the backend maps it to ``BackendUnavailableError``) and the
  next command reconnects; nothing is resent, since a command that reached the server may have
  run. Reply timeouts are checked by one timer per connection against the oldest unanswered
  write: when it expires, every command in flight fails with redis-py's ``TimeoutError`` and the
  connection is dropped (a late reply would otherwise be taken for the next command's).

The connection is opened by redis-py (``Connection.connect()``: TCP, TLS or Unix socket, AUTH,
HELLO, SELECT, CLIENT SETNAME, all from the client's options), then its transport is handed to
this module's protocol.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Sequence
from typing import Any

import hiredis
from redis import exceptions as rx
from redis._parsers.base import BaseParser
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)

__all__ = ["Pipeline"]

_PACK = hiredis.pack_command
_INCOMPLETE: Any = object()  # what hiredis returns while a reply is not complete yet
_SLACK = 0.05  # writes within 5 % of the timeout share one deadline entry
_BACKGROUND: set[asyncio.Task[None]] = set()
_POOLS = (ConnectionPool, BlockingConnectionPool)
_CONNECTIONS = (Connection, SSLConnection, UnixDomainSocketConnection)


class _Protocol(asyncio.Protocol):
    """One connection: futures waiting for replies, in the order their commands were written."""

    __slots__ = (
        "alone",
        "answered",
        "closed",
        "flushes",
        "loop",
        "owner",
        "queue",
        "reader",
        "scheduled",
        "timeout",
        "timer",
        "transport",
        "waiting",
        "writes",
        "written",
    )

    def __init__(self, owner: Connection, loop: asyncio.AbstractEventLoop, timeout: float | None):
        self.owner = owner  # redis-py's Connection that opened the socket (closed with it)
        self.loop = loop
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(
            protocolError=rx.InvalidResponse,
            replyError=BaseParser.parse_error,
            notEnoughData=_INCOMPLETE,
        )
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.queue: list[bytes] = []  # packed commands not written yet
        self.scheduled = False
        self.alone = True  # the last batch written held one command
        self.closed = False
        # Reply timeouts: [commands written so far, deadline] per write, oldest first.
        self.writes: collections.deque[list[Any]] = collections.deque()
        self.written = 0  # commands written (a statistic the tests read, and timeout bookkeeping)
        self.flushes = 0  # writes made
        self.answered = 0
        self.timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ sending

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """Queue one packed command; return the future of its reply."""
        future = self.loop.create_future()
        self.waiting.append(future)
        if self.alone and len(self.waiting) == 1 and not self.queue:
            # Nothing in flight, and the last batch was a single command: a sequential
            # caller, who should not wait an event-loop iteration for company.
            self._write(packed, 1)
        else:
            self.queue.append(packed)
            if not self.scheduled:
                self.scheduled = True
                self.loop.call_soon(self.flush)
        return future

    def send_many(self, packed: Sequence[bytes]) -> list[asyncio.Future[Any]]:
        """Queue several packed commands, written together; their futures in order."""
        create = self.loop.create_future
        futures = [create() for _ in packed]
        self.waiting.extend(futures)
        self.queue.extend(packed)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)
        return futures

    def flush(self) -> None:
        self.scheduled = False
        queue = self.queue
        if queue and not self.closed:
            self.queue = []
            # Under concurrency every batch waits for the end of the iteration (one write per
            # wave of callers, not two); a batch of one means the callers went sequential.
            self.alone = len(queue) == 1
            self._write(b"".join(queue) if len(queue) > 1 else queue[0], len(queue))

    def _write(self, data: bytes, count: int) -> None:
        assert self.transport is not None
        self.transport.write(data)
        self.written += count
        self.flushes += 1
        timeout = self.timeout
        if timeout is not None:
            # Writes close together share one entry, so the list stays short under load; a
            # command may then wait up to 5 % longer than the timeout, never less.
            deadline = self.loop.time() + timeout
            writes = self.writes
            if writes and deadline - writes[-1][1] < timeout * _SLACK:
                writes[-1][0] = self.written
            else:
                writes.append([self.written, deadline + timeout * _SLACK])
            if self.timer is None:
                self.timer = self.loop.call_at(writes[0][1], self._check_timeout)

    def _check_timeout(self) -> None:
        self.timer = None
        writes = self.writes
        while writes and writes[0][0] <= self.answered:
            writes.popleft()  # answered in full
        if not writes or self.closed:
            return
        deadline = writes[0][1]
        if self.loop.time() < deadline:
            self.timer = self.loop.call_at(deadline, self._check_timeout)
            return
        # The oldest write is unanswered: every later reply would arrive out of step.
        self.fail(rx.TimeoutError, f"Timeout reading from the server after {self.timeout:g}s")

    # ------------------------------------------------------------------ receiving

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        answered = 0
        try:
            while True:
                reply = reader.gets()
                if reply is _INCOMPLETE:
                    break
                answered += 1
                future = waiting.popleft()
                if future.done():
                    continue  # its caller was cancelled: the reply is read and dropped
                if isinstance(reply, rx.RedisError):  # an error reply (hiredis made it)
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except (rx.InvalidResponse, hiredis.ProtocolError, IndexError) as e:
            # Garbage, or a reply nobody asked for: nothing after it can be trusted.
            self.fail(rx.ConnectionError, f"Protocol error from the server: {e}")
        finally:
            self.answered += answered

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost fails what is in flight

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(rx.ConnectionError, "Connection closed by server.", exc)

    # ------------------------------------------------------------------ failing

    def fail(
        self,
        kind: type[rx.RedisError],
        message: str,
        cause: BaseException | None = None,
        *,
        release: bool = True,
    ) -> None:
        """Fail every command in flight with ``kind(message)`` and drop the connection."""
        if self.closed:
            return
        self.closed = True
        self.queue = []
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        waiting, self.waiting = self.waiting, collections.deque()
        for future in waiting:
            if not future.done():
                error = kind(message)
                error.__cause__ = cause
                future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()
        if release:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                task = self.loop.create_task(self.release())
                _BACKGROUND.add(task)  # the loop holds tasks weakly: keep it until done
                task.add_done_callback(_BACKGROUND.discard)

    async def release(self) -> None:
        """Let redis-py's Connection forget the socket it opened (no ResourceWarning)."""
        with contextlib.suppress(Exception):
            await self.owner.disconnect(nowait=True)


class Pipeline:
    """Commands of one event loop, pipelined on one connection (see the module docstring).

    Args:
        client: Where the connection options come from (its pool's ``connection_kwargs``).
        close_client: Close ``client`` too in :meth:`close` (the storage made it).
    """

    def __init__(self, client: Redis, *, close_client: bool = False) -> None:
        self._client = client
        self._pool = client.connection_pool
        self._close_client = close_client
        timeout = self._pool.connection_kwargs.get("socket_timeout")
        self._timeout = float(timeout) if timeout else None
        self._proto: _Protocol | None = None
        self._opening: asyncio.Task[_Protocol] | None = None
        self._closed = False  # for good: the storage was closed

    @staticmethod
    def supports(client: Redis) -> bool:
        """Whether ``client``'s connections are plain redis-py ones this module can drive."""
        pool = getattr(client, "connection_pool", None)
        return type(pool) in _POOLS and getattr(pool, "connection_class", None) in _CONNECTIONS

    # ------------------------------------------------------------------ commands

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Send one command; an awaitable of its reply (raw bytes for values)."""
        proto = self._proto
        if proto is None or proto.closed:
            return self._execute_later(args)
        return proto.send(_PACK(args))

    async def _execute_later(self, args: tuple[Any, ...]) -> Any:
        proto = await self._connected()
        return await proto.send(_PACK(args))

    async def batch(
        self, commands: Sequence[Sequence[Any]], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Send several commands in one write; their replies (or errors) in order."""
        if not commands:
            return []
        proto = self._proto
        if proto is None or proto.closed:
            proto = await self._connected()
        futures = proto.send_many([_PACK(tuple(c)) for c in commands])
        results: list[Any] = []
        first: BaseException | None = None
        try:
            for future in futures:
                try:
                    results.append(await future)
                except rx.RedisError as e:
                    results.append(e)
                    first = first or e
        except BaseException:
            for future in futures:
                future.cancel()  # cancelled: the replies still come and are dropped
            raise
        if first is not None and raise_on_error:
            raise first
        return results

    # ------------------------------------------------------------------ connection

    async def _connected(self) -> _Protocol:
        if self._closed:
            raise rx.ConnectionError("The storage's pipeline is closed")
        opening = self._opening
        if opening is None or opening.done():
            proto = self._proto
            if proto is not None and not proto.closed:
                return proto
            opening = self._opening = asyncio.get_running_loop().create_task(self._open())
        # Shielded: a caller cancelled while the connection opens does not stop it for the
        # others waiting on it.
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if opening.cancelled() and task is not None and not task.cancelling():
                # close() stopped the connect, not a cancellation of this caller.
                raise rx.ConnectionError("The storage was closed while connecting") from None
            raise

    async def _open(self) -> _Protocol:
        connection: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        await connection.connect()  # type: ignore[no-untyped-call]
        writer = getattr(connection, "_writer", None)
        transport = getattr(writer, "transport", None)
        if not isinstance(transport, asyncio.Transport):  # pragma: no cover - redis-py changed
            await connection.disconnect(nowait=True)
            raise rx.ConnectionError("redis-py's connection exposes no asyncio transport")
        proto = _Protocol(connection, asyncio.get_running_loop(), self._timeout)  # type: ignore[arg-type]
        proto.transport = transport
        transport.set_protocol(proto)
        self._proto = proto
        return proto

    async def close(self, *, final: bool = True) -> None:
        """Drop the connection (failing what is in flight); with ``final``, for good.

        ``final=False`` (the loop is shutting down) lets a later command reconnect. An owned
        client is closed either way.
        """
        if self._closed:
            return
        self._closed = final
        opening = self._opening
        if opening is not None and not opening.done():
            opening.cancel()
            with contextlib.suppress(BaseException):
                await opening
        proto = self._proto
        self._proto = None
        if proto is not None:
            proto.fail(rx.ConnectionError, "The storage was closed", release=False)
            await proto.release()
        if self._close_client:
            await self._client.aclose()
