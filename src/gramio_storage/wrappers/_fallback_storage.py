"""``FallbackStorage`` and GramIO's ``with_fallback_storages``: the facade over FallbackBackend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._errors import ConfigurationError
from .._protocol import TTL
from .._storage import BaseStorage
from ._base import backend_of, check_storage
from ._fallback import FallbackBackend, Policy

__all__ = ["FallbackStorage", "with_fallback_storages"]


class FallbackStorage(BaseStorage):
    """A storage over tiers: ``primary`` first, then each of ``fallbacks`` (see FallbackBackend).

    Typical stacks::

        # A process-local copy in front of Redis (single process: other processes' writes
        # are not seen by the memory tier; use CachedStorage for that).
        FallbackStorage(MemoryStorage(max_size=10_000), RedisStorage.from_url(url))
        # Redis, with SQLite behind it for outages.
        FallbackStorage(RedisStorage.from_url(url), SQLiteStorage("fallback.db"))

    Every tier must use the same codec (values are copied between tiers as bytes); views are
    fine (each tier keeps its prefix). The default TTL is the primary's unless ``ttl`` is
    given. Closing this storage closes the tiers.

    Args:
        primary: The first tier: atomic operations run here.
        *fallbacks: The next tiers, in order.
        policy: ``"primary"`` (the first reachable tier must succeed, others are logged and
            counted) or ``"all"`` (every tier must succeed).
        backfill: Copy a value found in a later tier into the earlier ones.
        atomic_failover: Run ``add``/``incr``/``update`` on the next tier while the primary is
            down (atomic on that tier only) instead of raising.
        retry_after: Seconds an unreachable tier is skipped before it is tried again.
        ttl: Default TTL (default: the primary's).
        max_value_bytes: Refuse encoded values larger than this.
    """

    def __init__(
        self,
        primary: BaseStorage,
        *fallbacks: BaseStorage,
        policy: Policy = "primary",
        backfill: bool = True,
        atomic_failover: bool = False,
        retry_after: float = 1.0,
        ttl: TTL | None = None,
        max_value_bytes: int | None = None,
    ) -> None:
        storages = [check_storage(primary, "primary")] + [
            check_storage(s, "fallback") for s in fallbacks
        ]
        if not fallbacks:
            raise ConfigurationError("FallbackStorage needs a primary and at least one fallback")
        codec = primary.codec
        for other in storages[1:]:
            if repr(other.codec) != repr(codec) or type(other.codec) is not type(codec):
                raise ConfigurationError(
                    f"every tier must use the same codec: {codec!r} and {other.codec!r}"
                )
        backend = FallbackBackend(
            [backend_of(s) for s in storages],
            owners=storages,
            policy=policy,
            backfill=backfill,
            atomic_failover=atomic_failover,
            retry_after=retry_after,
        )
        super().__init__(
            backend,
            codec=codec,
            ttl=primary.default_ttl if ttl is None else ttl,
            max_value_bytes=max_value_bytes,
        )

    @property
    def backend(self) -> FallbackBackend:
        """The :class:`FallbackBackend` holding the tiers."""
        return self._backend  # type: ignore[return-value]

    @property
    def failures(self) -> dict[str, int]:
        """Failed calls per tier since this storage was made (see FallbackBackend.failures)."""
        return self.backend.failures


def with_fallback_storages(storages: Sequence[BaseStorage], **options: Any) -> FallbackStorage:
    """GramIO's ``withFallbackStorages(storages)``: a :class:`FallbackStorage` over ``storages``.

    Unlike GramIO, a stored falsy value (``0``, ``False``, ``""``, ``None``) is a value, not a
    miss. ``options`` are FallbackStorage's keywords (``policy``, ``backfill``...).
    """
    storages = list(storages)
    if len(storages) < 2:
        raise ConfigurationError("with_fallback_storages() needs at least two storages")
    return FallbackStorage(storages[0], *storages[1:], **options)
