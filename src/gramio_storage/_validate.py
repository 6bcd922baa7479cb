"""Argument validation the facade owns, once for every backend: keys, prefixes, TTLs, amounts.

Every check runs before any I/O and raises a :class:`~gramio_storage.StorageError` subclass
that names the argument, so a bad call never reaches a driver (which would answer with a raw
``UnicodeEncodeError``, ``OverflowError`` or a server's "out of range").
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from ._backend import Capabilities
from ._errors import InvalidArgumentError, InvalidKeyError, InvalidTTLError
from ._keys import Key

__all__ = ["check_full_key", "check_prefix", "resolve_key", "ttl_seconds"]


def resolve_key(key: object, prefix: str, caps: Capabilities) -> str:
    """The full backend key for a user key: type, emptiness, template, UTF-8 and length checks."""
    if key.__class__ is str:
        name: str = key
    elif key.__class__ is Key:
        assert isinstance(key, Key)  # narrowing only; the class check decided
        if key._fields:
            raise InvalidKeyError(
                f"Key template {key.name!r} has unfilled fields {list(key._fields)}: "
                "call .format(...) first",
                key=key.name,
                backend=caps.name,
            )
        name = key.name
    elif isinstance(key, str):  # a str subclass (an Enum member, say): use its text
        name = str.__str__(key)
    else:
        raise InvalidKeyError(
            f"Storage keys must be str or Key, got {key.__class__.__qualname__}: {key!r}",
            backend=caps.name,
        )
    if not name:
        raise InvalidKeyError("Storage keys must not be empty", key="", backend=caps.name)
    full = prefix + name
    check_full_key(full, caps)
    return full


def check_full_key(full: str, caps: Capabilities, what: str = "key") -> None:
    """Raise :class:`InvalidKeyError` if ``full`` is not UTF-8 encodable or is too long."""
    limit = caps.max_key_bytes
    if full.isascii():
        if limit is not None and len(full) > limit:
            raise _too_long(full, len(full), limit, caps, what)
        return
    try:
        size = len(full.encode())
    except UnicodeEncodeError as e:
        # A lone surrogate ("\ud800"): no backend can store it, and JS strings that hold one
        # cannot round-trip through UTF-8 either. The message shows it escaped.
        raise InvalidKeyError(
            f"Storage {what} {full!r} is not valid Unicode text (a lone surrogate at index "
            f"{e.start}); keys must be UTF-8 encodable",
            key=full.encode("utf-8", "backslashreplace").decode(),
            backend=caps.name,
        ) from None
    if limit is not None and size > limit:
        raise _too_long(full, size, limit, caps, what)


def _too_long(full: str, size: int, limit: int, caps: Capabilities, what: str) -> InvalidKeyError:
    return InvalidKeyError(
        f"Storage {what} {full[:60]!r}... is {size} bytes long; the {caps.name} backend "
        f"allows at most {limit} bytes",
        key=full,
        backend=caps.name,
    )


def check_prefix(prefix: object, current: str, caps: Capabilities) -> str:
    """Validate a prefix argument (``with_prefix``, ``keys``, ``clear``); return the full one."""
    if not isinstance(prefix, str):
        raise InvalidKeyError(
            f"prefix must be a str, got {prefix.__class__.__qualname__}", backend=caps.name
        )
    full = current + str.__str__(prefix)
    if full:
        check_full_key(full, caps, "prefix")
    return full


def ttl_seconds(ttl: object, caps: Capabilities, argument: str = "ttl") -> float:
    """Normalise a TTL (seconds or ``timedelta``) to positive finite float seconds.

    Raises:
        InvalidTTLError: Not a number or ``timedelta``, not positive, not finite, or outside
            the backend's ``min_ttl``/``max_ttl``. Never ``OverflowError``.
    """
    if ttl.__class__ is timedelta:
        seconds = ttl.total_seconds()
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        try:
            seconds = float(ttl)
        except OverflowError:  # an int beyond float range, 10**400
            seconds = math.inf
    else:
        raise InvalidTTLError(
            f"{argument} must be seconds (int or float) or a timedelta, "
            f"got {ttl.__class__.__qualname__}",
            backend=caps.name,
        )
    if not (0.0 < seconds < math.inf):  # also rejects NaN
        shown = "an integer too large for a float" if seconds == math.inf else repr(ttl)
        raise InvalidTTLError(
            f"{argument} must be a positive, finite duration, got {shown}", backend=caps.name
        )
    if seconds < caps.min_ttl:
        raise InvalidTTLError(
            f"{argument}={seconds:g}s is below the {caps.name} backend's "
            f"minimum TTL of {caps.min_ttl:g}s",
            backend=caps.name,
        )
    if caps.max_ttl is not None and seconds > caps.max_ttl:
        raise InvalidTTLError(
            f"{argument}={seconds:g}s is above the {caps.name} backend's "
            f"maximum TTL of {caps.max_ttl:g}s",
            backend=caps.name,
        )
    return seconds


def check_amount(amount: Any, caps: Capabilities) -> int:
    """``incr``'s ``amount``: an ``int`` (not a bool, not a float)."""
    if amount.__class__ is not int:
        raise InvalidArgumentError(
            f"incr() amount must be an int, got {amount.__class__.__qualname__}: {amount!r}",
            backend=caps.name,
        )
    return amount
