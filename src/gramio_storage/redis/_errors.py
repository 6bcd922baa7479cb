"""The one place where redis-py's exceptions become the library's error tree.

Every backend method runs its commands inside :class:`ErrorMap` (a context manager, as httpx's
``map_httpcore_exceptions``); nothing else catches driver exceptions. Messages name the operation,
the key and the backend, and pass through the backend's :class:`~gramio_storage._redact.Redactor`,
so a password never shows even if a driver message quotes it.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Literal, Protocol

from redis import exceptions as rx

from .._errors import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    InvalidKeyError,
    StorageError,
)

if TYPE_CHECKING:
    from .._redact import Redactor

__all__ = ["ERRORS", "ErrorMap", "translate"]

# Errors that mean "the server cannot be used right now" rather than "the command failed".
UNAVAILABLE: tuple[type[BaseException], ...] = (
    rx.ConnectionError,  # refused, reset, closed, DNS, too many connections, loading AOF
    rx.ClusterDownError,
    rx.TryAgainError,
    rx.RedisClusterException,  # no reachable node, slot not covered
    OSError,
)
# Everything a command can raise that is the driver's or the server's doing. UnicodeError: text
# that cannot be sent as UTF-8. RuntimeError: only asyncio's complaints about a loop (a client
# the caller made on another event loop); any other RuntimeError propagates unchanged.
ERRORS: tuple[type[BaseException], ...] = (
    rx.RedisError,
    rx.RedisClusterException,
    OSError,
    UnicodeError,
    RuntimeError,
)


def translate(
    e: BaseException,
    op: str,
    key: str | None,
    *,
    timeout: float | None = None,
    redact: Redactor | None = None,
) -> BackendError | InvalidKeyError:
    """The library error for driver exception ``e`` raised by ``op`` (the caller chains it)."""
    if isinstance(e, UnicodeError):
        return InvalidKeyError(
            f"Redis {op}: key {key!r} cannot be encoded as UTF-8 ({e})", key=key, backend="redis"
        )
    what = f"{op} of key {key!r}" if key is not None else op
    detail = f"{e.__class__.__name__}: {e}"
    if redact is not None:
        detail = redact(detail)
    cls: type[BackendError]
    if isinstance(e, (rx.AuthenticationError, rx.AuthenticationWrongNumberOfArgsError)):
        cls, message = AuthenticationError, f"Redis refused the credentials ({what}): {detail}"
    elif isinstance(e, (rx.TimeoutError, TimeoutError)):
        within = f" within {timeout:g}s" if timeout else " in time"
        cls, message = BackendTimeoutError, f"Redis did not answer{within} ({what}): {detail}"
    elif isinstance(e, UNAVAILABLE):
        cls, message = BackendUnavailableError, f"Redis is unavailable ({what}): {detail}"
    elif isinstance(e, RuntimeError):
        cls = BackendUnavailableError
        message = (
            f"Redis {what} failed: the redis-py client belongs to another event loop ({detail}); "
            "create the client on the loop that uses it, or let the storage create it"
        )
    else:
        cls, message = BackendError, f"Redis {what} failed: {detail}"
    return cls(message, key=key, backend="redis")


def _is_loop_error(e: RuntimeError) -> bool:
    text = str(e)
    return "loop" in text or "attached to a different" in text


class Owner(Protocol):
    """What :class:`ErrorMap` reads from the backend, and only when an error happened."""

    reply_timeout: float | None
    redactor: Redactor


class ErrorMap:
    """``with ErrorMap(backend, "get", key):`` turns driver exceptions into ours.

    Args:
        owner: The backend: its reply timeout is quoted in a :class:`BackendTimeoutError`,
            its redactor scrubs secrets out of the driver's message.
        op: The operation named in the message (``"get"``, ``"scan for prefix 'a'"``).
        key: The key named in the message and set on the error, if any.
    """

    __slots__ = ("_key", "_op", "_owner")

    def __init__(self, owner: Owner, op: str, key: str | None = None) -> None:
        self._owner = owner
        self._op = op
        self._key = key

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        tp: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if e is None or isinstance(e, StorageError) or not isinstance(e, ERRORS):
            return False
        if isinstance(e, RuntimeError) and not _is_loop_error(e):
            return False
        owner = self._owner
        raise translate(
            e, self._op, self._key, timeout=owner.reply_timeout, redact=owner.redactor
        ) from e
