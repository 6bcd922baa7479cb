"""Codecs turn values into the bytes a backend stores, and back into typed values.

The default, :data:`JSON`, writes compact UTF-8 JSON with msgspec: the same bytes GramIO's
TypeScript adapters write with ``JSON.stringify`` for the same data, so a Python bot and a GramIO
bot can share one database. :data:`MSGPACK` is smaller and faster but only Python (or msgpack)
readers understand it. Anything with ``encode``/``decode`` methods is a codec: see :class:`Codec`.
Pickle is never used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import msgspec

__all__ = ["JSON", "MSGPACK", "Codec", "JSONCodec", "MsgpackCodec"]


@runtime_checkable
class Codec(Protocol):
    """Converts values to bytes and back. Implement both methods to plug in your own format.

    ``decode`` must raise an exception when ``data`` does not fit ``type``; the storage wraps
    it in :class:`~gramio_storage.DecodeError` naming the key. ``encode`` must raise
    (``TypeError`` or ``ValueError``) on values it cannot represent; the storage wraps it in
    :class:`~gramio_storage.EncodeError` and writes nothing.
    """

    def encode(self, value: Any) -> bytes:
        """Serialise ``value``."""
        ...

    def decode(self, data: bytes, type: Any = Any) -> Any:
        """Deserialise ``data``, validating it as ``type`` (``Any`` means no validation)."""
        ...


def _is_pydantic_model(tp: Any) -> bool:
    # Duck-typed so pydantic is never imported unless the user's own types come from it.
    return isinstance(tp, type) and hasattr(tp, "model_validate") and hasattr(tp, "model_dump")


def _enc_hook(value: Any) -> Any:
    """Encode what msgspec does not know natively: pydantic models (as their JSON-mode dump)."""
    dump = getattr(value, "model_dump", None)
    if dump is not None and _is_pydantic_model(value.__class__):
        return dump(mode="json")
    raise TypeError(f"cannot encode objects of type {value.__class__.__qualname__}")


class _MsgspecCodec:
    """Shared machinery: one encoder, one untyped decoder, typed decoders cached per type."""

    __slots__ = ("_any", "_decoders", "encode")

    encode: Callable[[Any], bytes]
    _any: Callable[[bytes], Any]
    _decoders: dict[Any, Callable[[bytes], Any]]

    def __init__(self) -> None:
        encoder = self._make_encoder()
        # Bound C methods: no Python frame between the storage and msgspec on the hot path.
        self.encode = encoder.encode
        self._any = self._make_decoder(Any).decode
        self._decoders = {Any: self._any}

    def decode(self, data: bytes, type: Any = Any) -> Any:
        """Decode ``data`` into ``type``, building (and caching) a decoder on first use."""
        try:
            decoder = self._decoders[type]
        except KeyError:
            decoder = self._decoders[type] = self._typed_decoder(type)
        except TypeError:  # an unhashable type object (rare, e.g. some Annotated forms)
            decoder = self._typed_decoder(type)
        return decoder(data)

    def _typed_decoder(self, tp: Any) -> Callable[[bytes], Any]:
        if _is_pydantic_model(tp):
            return self._pydantic_decoder(tp)
        decode: Callable[[bytes], Any] = self._make_decoder(tp).decode
        return decode

    def _pydantic_decoder(self, tp: Any) -> Callable[[bytes], Any]:
        untyped = self._any
        validate = tp.model_validate
        return lambda data: validate(untyped(data))

    def _make_encoder(self) -> Any:
        raise NotImplementedError

    def _make_decoder(self, tp: Any) -> Any:
        raise NotImplementedError


class JSONCodec(_MsgspecCodec):
    """Compact UTF-8 JSON through msgspec, compatible with ``JSON.stringify``/``JSON.parse``.

    Values may be JSON builtins, dataclasses, ``msgspec.Struct``, ``TypedDict``, ``datetime``,
    ``UUID``, ``Enum``, ``Decimal`` and pydantic models.
    """

    __slots__ = ()

    # An int encodes as its ASCII digits, so backends may count natively (Redis INCRBY).
    plain_integers = True

    def _make_encoder(self) -> msgspec.json.Encoder:
        return msgspec.json.Encoder(enc_hook=_enc_hook)

    def _make_decoder(self, tp: Any) -> msgspec.json.Decoder[Any]:
        return msgspec.json.Decoder(tp)

    def _pydantic_decoder(self, tp: Any) -> Callable[[bytes], Any]:
        # pydantic-core parses JSON itself: one pass instead of decode-then-validate.
        return tp.model_validate_json  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return "JSONCodec()"


class MsgpackCodec(_MsgspecCodec):
    """MessagePack through msgspec: smaller and faster than JSON, readable by msgpack libraries."""

    __slots__ = ()

    def _make_encoder(self) -> msgspec.msgpack.Encoder:
        return msgspec.msgpack.Encoder(enc_hook=_enc_hook)

    def _make_decoder(self, tp: Any) -> msgspec.msgpack.Decoder[Any]:
        return msgspec.msgpack.Decoder(tp)

    def __repr__(self) -> str:
        return "MsgpackCodec()"


JSON = JSONCodec()
"""The default codec: compact JSON, shared by every storage that does not pass its own."""

MSGPACK = MsgpackCodec()
"""MessagePack codec instance."""
