"""The exception tree of gramio-storage.

Every error the library raises on purpose derives from :class:`StorageError`, so a bot can catch
one type around any storage call. Where it helps callers who do not know this library, an error
also derives from the builtin a Python user would expect (``KeyError``, ``TypeError``, ...)::

    StorageError
    ├── BackendError                  the backend failed (cause chained)
    │   ├── BackendUnavailableError   cannot reach it: connection refused, DNS, closed pool
    │   ├── BackendTimeoutError       it did not answer in time        (also TimeoutError)
    │   ├── RateLimitedError          it refused for too many requests
    │   └── AuthenticationError       credentials refused (never quoted back)
    ├── CodecError                                                      (also ValueError)
    │   ├── EncodeError               a value cannot be serialised     (also TypeError)
    │   └── DecodeError               stored bytes do not fit the key's type
    ├── InvalidArgumentError          a wrong argument type or value (also TypeError, ValueError)
    │   ├── InvalidKeyError           not a str/Key, empty, unfilled template, lone surrogate,
    │   │                             too long for the backend
    │   └── InvalidTTLError           negative, zero, NaN, infinite, outside the backend's range
    ├── ValueTooLargeError            above the backend's size limit   (also ValueError)
    ├── KeyNotFoundError              ``ttl()`` of a missing key         (also KeyError)
    ├── UnsupportedOperationError     the backend cannot do this op     (also NotImplementedError)
    ├── StorageClosedError            used after ``close()``
    └── ConfigurationError            bad URL or options                (also ValueError)
        ├── UnknownSchemeError        no adapter for a URL scheme
        └── MissingDependencyError    the extra for a backend is not installed (also ImportError)

Messages name the key and the backend; they never contain credentials.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "CodecError",
    "ConfigurationError",
    "DecodeError",
    "EncodeError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "InvalidTTLError",
    "KeyNotFoundError",
    "MissingDependencyError",
    "RateLimitedError",
    "StorageClosedError",
    "StorageError",
    "UnknownSchemeError",
    "UnsupportedOperationError",
    "ValueTooLargeError",
]


class StorageError(Exception):
    """Base class of every error gramio-storage raises.

    Attributes:
        key: The key the failed operation was about, when there is one.
        backend: The backend's short name (``"memory"``, ``"redis"``...), when known.
    """

    key: str | None
    backend: str | None

    def __init__(self, message: str, *, key: str | None = None, backend: str | None = None):
        if backend and backend not in message:
            message = f"{message} [{backend} backend]"
        super().__init__(message)
        self.key = key
        self.backend = backend


class BackendError(StorageError):
    """The backend failed to perform an operation; the driver's exception is the ``__cause__``."""


class BackendUnavailableError(BackendError):
    """The backend cannot be reached (connection refused, unknown host, pool closed...)."""


class BackendTimeoutError(BackendError, TimeoutError):
    """The backend did not answer within the configured timeout."""


class RateLimitedError(BackendError):
    """The backend refused the request because of a rate limit, after the allowed retries.

    Attributes:
        retry_after: Seconds the backend asked to wait, when it said.
    """

    retry_after: float | None

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        backend: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, key=key, backend=backend)
        self.retry_after = retry_after


class AuthenticationError(BackendError):
    """The backend refused the credentials. The message never contains them."""


class CodecError(StorageError, ValueError):
    """A value could not be converted to or from bytes."""


class EncodeError(CodecError, TypeError):
    """A value cannot be serialised by the storage's codec; nothing was written."""


class DecodeError(CodecError):
    """Stored bytes cannot be decoded, or do not fit the type declared by the key."""


class InvalidArgumentError(StorageError, TypeError, ValueError):
    """An argument has the wrong type or value (``incr(amount=1.5)``); nothing was done."""


class InvalidKeyError(InvalidArgumentError):
    """A key is not a str or :class:`~gramio_storage.Key`, is empty, or breaks a backend limit."""


class InvalidTTLError(InvalidArgumentError):
    """A TTL is not a positive finite duration, or is outside the backend's min/max."""


class ValueTooLargeError(StorageError, ValueError):
    """An encoded value exceeds the backend's size limit; nothing was written."""


class KeyNotFoundError(StorageError, KeyError):
    """The key does not exist (raised where a missing key cannot be answered with a default)."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in quotes.
        return str(self.args[0]) if self.args else ""


class UnsupportedOperationError(StorageError, NotImplementedError):
    """The backend cannot perform this operation (for example atomic ``incr`` on Cloudflare KV)."""


class StorageClosedError(StorageError):
    """The storage was used after :meth:`close`."""


class ConfigurationError(StorageError, ValueError):
    """A storage URL or constructor option is invalid."""


class UnknownSchemeError(ConfigurationError):
    """No built-in or installed adapter handles this URL scheme."""


class MissingDependencyError(ConfigurationError, ImportError):
    """The optional dependency a backend needs is not installed; the message names the extra."""
