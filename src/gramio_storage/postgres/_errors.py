"""The one place asyncpg's and the OS's exceptions become the library's errors.

:class:`ErrorMap` is used as ``with errors("get", key): ...`` around every driver call (as httpx's
``map_httpcore_exceptions``). Only driver and network exceptions are translated: an exception
from the caller's own code (``update``'s function) and the library's own errors pass through
untouched, and cancellation is never caught. Messages name the operation, the key and the
server, and go through the storage's :class:`~gramio_storage._redact.Redactor`, so no password
ever shows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import asyncpg  # type: ignore[import-untyped]

from .._backend_util import ErrorScope
from .._errors import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    DecodeError,
    InvalidKeyError,
    StorageError,
)
from .._redact import Redactor

__all__ = ["DRIVER_ERRORS", "ErrorMap"]

NAME = "postgres"

# What a driver call can raise that is about the server or the network, not about our caller.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,  # TimeoutError included
)

# SQLSTATE -> error, exact codes first, then two- and three-character classes.
_BY_STATE: dict[str, type[StorageError]] = {
    "57014": BackendTimeoutError,  # statement_timeout (our `timeout` option) cancelled it
    "3D000": BackendUnavailableError,  # the database does not exist
    "57P": BackendUnavailableError,  # the server is shutting down, crashed, or restarting
    "08": BackendUnavailableError,  # connection exceptions
    "53": BackendUnavailableError,  # insufficient resources: too many connections, disk full
    "28": AuthenticationError,  # invalid authorization: the password or the role was refused
}
_NOT_TEXT = "22021"  # character not in repertoire: a NUL in a key, or non-UTF-8 bytes cast
_TOO_BIG = "54000"  # index row size exceeds the maximum: the key is too long for the B-tree
_NOT_INT = "22P02"  # invalid text representation: incr's cast of a stored non-integer


def _state(e: BaseException) -> str:
    return getattr(e, "sqlstate", None) or ""


class ErrorMap:
    """Translates driver exceptions for one backend: knows its server and its secrets.

    ``scope(op, key)`` (or ``scope(op, keys=batch)``) is the context manager the backend wraps
    driver calls in; it is a ``functools.partial`` of the scope class, which saves a Python
    call on every operation (bench/bench_postgres.py).

    Args:
        server: ``host:port`` (or "the pool"), named in every message.
        redact: Scrubs the DSN's password, and any other secret, out of messages.
    """

    __slots__ = ("redact", "scope", "server")

    def __init__(self, server: str, redact: Redactor) -> None:
        self.server = server
        self.redact = redact
        self.scope: Callable[..., _Scope] = functools.partial(_Scope, self)

    def translate(
        self, e: BaseException, op: str, key: str | None = None, keys: Sequence[str] = ()
    ) -> StorageError:
        """The library's error for a driver exception ``e`` raised by ``op``."""
        if isinstance(e, StorageError):
            return e
        state = _state(e)
        if key is None:
            key = _blame(keys)
        if state == _NOT_TEXT and key is not None and "\x00" in key:
            return InvalidKeyError(
                f"Key {key!r} cannot be stored in PostgreSQL: TEXT holds no NUL characters",
                key=key,
                backend=NAME,
            )
        if state == _TOO_BIG and key is not None:
            return InvalidKeyError(
                f"Key {key[:60]!r}... ({len(key.encode())} bytes) is too long for "
                "PostgreSQL's primary key index",
                key=key,
                backend=NAME,
            )
        if op == "incr" and state in (_NOT_INT, _NOT_TEXT):
            return DecodeError(
                f"Cannot increment key {key!r}: the stored value is not an integer",
                key=key,
                backend=NAME,
            )
        where = f" of key {key!r}" if key is not None else ""
        message = self.redact(
            f"PostgreSQL {op}{where} failed ({self.server}): {e.__class__.__name__}: {e}"
        )
        return _kind(e, state)(message, key=key, backend=NAME)


def _kind(e: BaseException, state: str) -> type[StorageError]:
    for length in (5, 3, 2):
        kind = _BY_STATE.get(state[:length])
        if kind is not None:
            return kind
    if isinstance(e, asyncpg.exceptions.ClientConfigurationError):
        return ConfigurationError  # asyncpg refused an option or a DSN part at connect
    if isinstance(e, TimeoutError):  # the client-side limits: connect_timeout, timeout + grace
        return BackendTimeoutError
    if isinstance(e, OSError):  # refused, unreachable, DNS, reset
        return BackendUnavailableError
    if isinstance(e, asyncpg.InterfaceError) and ("closed" in str(e) or "closing" in str(e)):
        return BackendUnavailableError  # the connection went away under the call
    return BackendError


def _blame(keys: Sequence[str]) -> str | None:
    """The key a failed bulk call is about: one PostgreSQL cannot store, or the only one."""
    bad = next((k for k in keys if "\x00" in k), None)
    return bad if bad is not None or len(keys) != 1 else keys[0]


class _Scope(ErrorScope):
    """``with errors(op, key):`` translates driver exceptions raised in the block."""

    __slots__ = ("errors", "key", "keys", "op")
    driver_errors = DRIVER_ERRORS

    def __init__(
        self, errors: ErrorMap, op: str, key: str | None = None, keys: Sequence[str] = ()
    ) -> None:
        self.errors, self.op, self.key, self.keys = errors, op, key, keys

    def translate(self, exc: BaseException) -> StorageError:
        return self.errors.translate(exc, self.op, self.key, self.keys)
