"""TTL clamps: every expiry written is brought into ``[min_ttl, max_ttl]`` instead of refused.

A backend's own ``min_ttl``/``max_ttl`` make an out-of-range TTL an ``InvalidTTLError``; a
clamp is for policy ("no session lives longer than 30 days", "nothing expires in under a
minute on Cloudflare KV") where the caller should not have to know. ``missing_ttl`` also gives
writes without a TTL one, so nothing is kept forever.

Value size limits need no wrapper: every storage takes ``max_value_bytes=`` (the facade raises
``ValueTooLargeError`` naming the key and the size before any I/O).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .._backend import Backend, Entry
from .._errors import ConfigurationError
from .._protocol import TTL
from .._storage import BaseStorage
from .._validate import ttl_seconds
from ._base import WrapperBackend, backend_of, check_storage, derive

__all__ = ["TTLClampBackend", "TTLClampedStorage", "clamp_ttl"]


class TTLClampBackend(WrapperBackend):
    """``inner`` with write TTLs clamped into ``[min_ttl, max_ttl]``.

    Args:
        inner: The backend.
        min_ttl: Shorter TTLs become this (and never below the inner backend's minimum).
        max_ttl: Longer TTLs become this (and never above the inner backend's maximum).
        missing_ttl: The TTL of writes that pass none (``None``: they keep no expiry).
            Clamped too.

    ``incr`` on an existing counter keeps its expiry, as always; only the TTL a write passes is
    clamped.
    """

    def __init__(
        self,
        inner: Backend,
        *,
        min_ttl: float | None = None,
        max_ttl: float | None = None,
        missing_ttl: float | None = None,
    ) -> None:
        super().__init__(inner)
        caps = inner.capabilities
        for name, value in (
            ("min_ttl", min_ttl),
            ("max_ttl", max_ttl),
            ("missing_ttl", missing_ttl),
        ):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 < value < math.inf
            ):
                raise ConfigurationError(f"{name} must be positive finite seconds, got {value!r}")
        low = max(float(min_ttl or 0.0), caps.min_ttl)
        highs = [float(v) for v in (max_ttl, caps.max_ttl) if v is not None]
        high = min(highs) if highs else None
        if high is not None and low > high:
            raise ConfigurationError(f"min_ttl {low:g}s is above max_ttl {high:g}s")
        self.min_ttl = low
        self.max_ttl = high
        self.missing_ttl = None if missing_ttl is None else self._clamp(float(missing_ttl))
        # Any positive finite TTL is accepted by the facade now: this wrapper clamps it.
        self.capabilities = derive(caps, min_ttl=0.0, max_ttl=None)

    def describe(self) -> dict[str, object]:
        out = dict(self.inner.describe())
        out["ttl_range"] = (self.min_ttl, self.max_ttl)
        return out

    def _clamp(self, ttl: float) -> float:
        if ttl < self.min_ttl:
            return self.min_ttl
        if self.max_ttl is not None and ttl > self.max_ttl:
            return self.max_ttl
        return ttl

    def clamp(self, ttl: float | None) -> float | None:
        """The TTL actually written for a requested one (``None``: no expiry)."""
        return self.missing_ttl if ttl is None else self._clamp(ttl)

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        await self.inner.set(key, data, self.clamp(ttl))

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        await self.inner.set_many(items, self.clamp(ttl))

    async def set_entries(self, entries: Sequence[Entry], *, overwrite: bool = True) -> list[bool]:
        clamped = [(k, d, self.clamp(t)) for k, d, t in entries]
        return await self.inner.set_entries(clamped, overwrite=overwrite)

    async def add(self, key: str, data: bytes, ttl: float | None) -> bool:
        return await self.inner.add(key, data, self.clamp(ttl))

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        return await self.inner.incr(key, amount, self.clamp(ttl))

    async def update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        await self.inner.update(key, fn, self.clamp(ttl))


class TTLClampedStorage(BaseStorage):
    """``storage`` whose write TTLs are clamped (see :class:`TTLClampBackend`)."""

    def __init__(
        self,
        storage: BaseStorage,
        *,
        min_ttl: TTL | None = None,
        max_ttl: TTL | None = None,
        missing_ttl: TTL | None = None,
        max_value_bytes: int | None = None,
    ) -> None:
        check_storage(storage)
        caps = storage.capabilities
        loose = derive(caps, min_ttl=0.0, max_ttl=None)
        seconds = [
            None if t is None else ttl_seconds(t, loose, name)
            for t, name in (
                (min_ttl, "min_ttl"),
                (max_ttl, "max_ttl"),
                (missing_ttl, "missing_ttl"),
            )
        ]
        backend = TTLClampBackend(
            backend_of(storage), min_ttl=seconds[0], max_ttl=seconds[1], missing_ttl=seconds[2]
        )
        backend._owner = storage
        super().__init__(
            backend, codec=storage.codec, ttl=storage.default_ttl, max_value_bytes=max_value_bytes
        )

    @property
    def backend(self) -> TTLClampBackend:
        """The :class:`TTLClampBackend` doing the clamping."""
        return self._backend  # type: ignore[return-value]


def clamp_ttl(
    storage: BaseStorage,
    *,
    min_ttl: TTL | None = None,
    max_ttl: TTL | None = None,
    missing_ttl: TTL | None = None,
) -> TTLClampedStorage:
    """``storage`` with every write TTL clamped into ``[min_ttl, max_ttl]``.

    Example::

        sessions = clamp_ttl(RedisStorage.from_url(url), max_ttl=timedelta(days=30),
                             missing_ttl=timedelta(days=30))
    """
    return TTLClampedStorage(storage, min_ttl=min_ttl, max_ttl=max_ttl, missing_ttl=missing_ttl)
