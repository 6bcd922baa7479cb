"""OpenTelemetry spans and metrics for any storage, after the database semantic conventions.

Each backend call becomes a ``CLIENT`` span named ``"<operation> <system>"`` (``"get redis"``)
with ``db.system.name`` (and the older ``db.system``), ``db.operation.name``,
``db.operation.batch.size`` for batches of two or more, and ``error.type`` (the exception's
class name) when it fails; its duration goes to the ``db.client.operation.duration`` histogram
(seconds) with the same attributes. A value is never recorded; a key only with
``record_keys=True`` (attribute ``db.query.parameter.key``), and an error's message (which names
the key) only then too. Needs the ``[otel]`` extra (``opentelemetry-api``); without an SDK
configured the API is a no-op and the overhead is a few microseconds (docs/benchmarks.md).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from .._backend import Backend, Entry
from .._storage import BaseStorage
from ._base import WrapperBackend, backend_of, check_storage

try:
    from opentelemetry import metrics, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as e:  # pragma: no cover - exercised without the extra
    raise ImportError("Telemetry needs OpenTelemetry: pip install 'gramio-storage[otel]'") from e

__all__ = ["InstrumentedBackend", "InstrumentedStorage", "instrument"]

T = TypeVar("T")
SCOPE = "gramio_storage"
KEY_ATTRIBUTE = "db.query.parameter.key"
# Buckets the semantic conventions advise for db.client.operation.duration.
_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0]


def _version() -> str:
    from .. import __version__

    return __version__


class InstrumentedBackend(WrapperBackend):
    """``inner`` with a span and a duration measurement per call.

    Args:
        inner: The backend measured.
        tracer_provider: Where spans go (default: the global provider).
        meter_provider: Where metrics go (default: the global provider).
        record_keys: Add the key (single-key calls) and error messages to spans.
        system: ``db.system.name`` (default: the backend's ``capabilities.name``).
    """

    def __init__(
        self,
        inner: Backend,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        record_keys: bool = False,
        system: str | None = None,
    ) -> None:
        super().__init__(inner)
        self.system = system or inner.capabilities.name
        self.record_keys = record_keys
        version = _version()
        self._tracer = trace.get_tracer(SCOPE, version, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, version, meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of storage operations",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self._base = {"db.system.name": self.system, "db.system": self.system}
        self._names: dict[str, str] = {}  # operation -> span name, built once
        self._op_attrs: dict[str, dict[str, Any]] = {}

    def _attributes(self, op: str, key: str | None, batch: int | None) -> dict[str, Any]:
        if (key is None or not self.record_keys) and (batch is None or batch < 2):
            # The common case: one shared, never mutated dict per operation.
            attrs = self._op_attrs.get(op)
            if attrs is None:
                attrs = self._op_attrs[op] = {**self._base, "db.operation.name": op}
            return attrs
        attrs = {**self._base, "db.operation.name": op}
        if batch is not None and batch >= 2:
            attrs["db.operation.batch.size"] = batch
        if key is not None and self.record_keys:
            attrs[KEY_ATTRIBUTE] = key
        return attrs

    async def _call(
        self,
        op: str,
        call: Callable[[], Awaitable[T]],
        key: str | None = None,
        batch: int | None = None,
    ) -> T:
        # start_span, not start_as_current_span: attaching a context per call costs more than
        # the rest of the wrapper (docs/benchmarks.md); the span's parent is still the caller's.
        attrs = self._attributes(op, key, batch)
        name = self._names.get(op) or self._names.setdefault(op, f"{op} {self.system}")
        span = self._tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attrs)
        metric_attrs = self._op_attrs.get(op) or attrs
        start = time.perf_counter()
        try:
            return await call()
        except Exception as e:
            metric_attrs = self._failed(span, attrs, e)
            raise
        finally:
            span.end()
            self._duration.record(time.perf_counter() - start, metric_attrs)

    def _failed(self, span: Any, attrs: dict[str, Any], error: Exception) -> dict[str, Any]:
        error_type = type(error).__qualname__
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, str(error) if self.record_keys else None))
        return {**_metric_attributes(attrs), "error.type": error_type}

    # ------------------------------------------------------------------ the contract

    async def get(self, key: str) -> bytes | None:
        return await self._call("get", lambda: self.inner.get(key), key)

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        await self._call("set", lambda: self.inner.set(key, data, ttl), key)

    async def delete(self, key: str) -> bool:
        return await self._call("delete", lambda: self.inner.delete(key), key)

    async def has(self, key: str) -> bool:
        return await self._call("has", lambda: self.inner.has(key), key)

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        return await self._call("get_many", lambda: self.inner.get_many(keys), batch=len(keys))

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        await self._call("set_many", lambda: self.inner.set_many(items, ttl), batch=len(items))

    async def delete_many(self, keys: Sequence[str]) -> int:
        return await self._call(
            "delete_many", lambda: self.inner.delete_many(keys), batch=len(keys)
        )

    async def clear(self, prefix: str) -> int:
        return await self._call("clear", lambda: self.inner.clear(prefix))

    async def ttl(self, key: str) -> float | None:
        return await self._call("ttl", lambda: self.inner.ttl(key), key)

    async def get_entries(self, keys: Sequence[str]) -> list[tuple[bytes | None, float | None]]:
        return await self._call(
            "get_entries", lambda: self.inner.get_entries(keys), batch=len(keys)
        )

    async def set_entries(self, entries: Sequence[Entry], *, overwrite: bool = True) -> list[bool]:
        return await self._call(
            "set_entries",
            lambda: self.inner.set_entries(entries, overwrite=overwrite),
            batch=len(entries),
        )

    async def add(self, key: str, data: bytes, ttl: float | None) -> bool:
        return await self._call("add", lambda: self.inner.add(key, data, ttl), key)

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        return await self._call("incr", lambda: self.inner.incr(key, amount, ttl), key)

    async def update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        await self._call("update", lambda: self.inner.update(key, fn, ttl), key)

    def scan(self, prefix: str) -> AsyncIterator[str]:
        return self._iterate("scan", self.inner.scan(prefix))

    def scan_ttl(self, prefix: str) -> AsyncIterator[tuple[str, float | None]]:
        return self._iterate("scan_ttl", self.inner.scan_ttl(prefix))

    async def _iterate(self, op: str, source: AsyncIterator[T]) -> AsyncIterator[T]:
        # One span for the whole listing; not made current (a generator spans many tasks' turns).
        attrs = self._attributes(op, None, None)
        start = time.perf_counter()
        span = self._tracer.start_span(
            f"{op} {self.system}", kind=SpanKind.CLIENT, attributes=attrs
        )
        count = 0
        try:
            async for item in source:
                count += 1
                yield item
        except Exception as e:
            attrs = self._failed(span, attrs, e)
            raise
        finally:
            span.set_attribute("db.response.returned_rows", count)
            span.end()
            self._duration.record(time.perf_counter() - start, _metric_attributes(attrs))


def _metric_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    # Metrics never carry a key (unbounded cardinality) nor the batch size.
    return {k: v for k, v in attrs.items() if k not in (KEY_ATTRIBUTE, "db.operation.batch.size")}


class InstrumentedStorage(BaseStorage):
    """``storage`` with OpenTelemetry spans and metrics (see :func:`instrument`)."""

    def __init__(
        self,
        storage: BaseStorage,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        record_keys: bool = False,
        max_value_bytes: int | None = None,
    ) -> None:
        check_storage(storage)
        backend = InstrumentedBackend(
            backend_of(storage),
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            record_keys=record_keys,
        )
        backend._owner = storage
        super().__init__(
            backend, codec=storage.codec, ttl=storage.default_ttl, max_value_bytes=max_value_bytes
        )

    @property
    def backend(self) -> InstrumentedBackend:
        """The :class:`InstrumentedBackend` recording the telemetry."""
        return self._backend  # type: ignore[return-value]


def instrument(
    storage: BaseStorage,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    record_keys: bool = False,
) -> InstrumentedStorage:
    """``storage`` with a span and a duration metric per backend call.

    Example::

        storage = instrument(RedisStorage.from_url(url))   # global providers
        storage = instrument(storage, tracer_provider=provider, record_keys=True)

    Closing the returned storage closes ``storage``.
    """
    return InstrumentedStorage(
        storage,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        record_keys=record_keys,
    )
