r"""Codecs turn values into the bytes a backend stores, and back into typed values.

The default, :data:`JSON`, writes compact UTF-8 JSON with msgspec, so a Python bot and a GramIO
bot can share one database. For the same data its bytes are the bytes ``JSON.stringify`` writes
(no spaces, the same escapes, non-ASCII text as UTF-8, an unpaired surrogate as ``\udXXX``),
with the two exceptions below, where ``JSON.parse`` reads the same value either way. ``NaN``
and infinities, which ``JSON.stringify`` writes as ``null`` (so they would read back as
``None``), are refused with an error instead. The exceptions:

- Some floats print in another notation (the same shortest digits):

  ==========================  =================  =====================
  float                       msgspec (ours)     ``JSON.stringify``
  ==========================  =================  =====================
  a whole number below 1e16   ``2.0``, ``-0.0``  ``2``, ``0``
  1e16 <= abs(x) < 1e21       ``1e16``           ``10000000000000000``
  abs(x) >= 1e21              ``1e21``           ``1e+21``
  1e-6 <= abs(x) < 1e-5       ``5e-6``           ``0.000005``
  ==========================  =================  =====================

- Object keys keep the dict's order; a JavaScript object lists the keys that are array
  indices (``"0"`` to ``"4294967294"``) first, in numeric order.

What ``2.0`` reads back as: ``2.0`` (a float) in Python, from every backend; the number ``2`` in
a GramIO bot (JavaScript has one number type), which writes it back as ``2``, an int to Python
(a ``Key`` typed ``float`` still reads ``2.0``). One backend-specific case: in a SQLite table
that GramIO created (``value JSONB``, NUMERIC affinity), a value that is a bare whole number is
stored as an INTEGER, so it reads back as ``2`` on both sides.

Rewriting the floats after msgspec measured at about half the in-memory ``set`` rate
(``bench/bench_memory.py``), for bytes that read back the same, so they stay as msgspec writes
them. Decoding accepts everything ``JSON.parse`` accepts: what msgspec's parser refuses (an
escaped unpaired surrogate, a number beyond the float range) goes through the standard library's
parser, and only then.

:data:`MSGPACK` is smaller and faster but only Python (or msgpack) readers understand it.
Anything with ``encode``/``decode`` methods is a codec: see :class:`Codec`. Pickle is never used.
"""

from __future__ import annotations

import json
import math
import re
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


# ---------------------------------------------------------------------- JSON beyond msgspec
# The rare inputs msgspec refuses but JavaScript's JSON accepts. None of this runs unless the
# fast path raised first, so the common decode stays one msgspec call and the common encode one
# msgspec call plus the search for a null that may hide a NaN (see JSONCodec._wrap_encoder).

_SURROGATE = re.compile("([\ud800-\udfff])")
_PLAIN_JSON = msgspec.json.Encoder().encode
_NULL = re.compile(b"null").search


def _parser_refused(error: ValueError) -> bool:
    """Whether ``error`` is a parser rejecting the JSON text (not a value failing validation)."""
    if isinstance(error, msgspec.DecodeError):
        return not isinstance(error, msgspec.ValidationError) or str(error).startswith(
            "Number out of range"
        )
    errors = getattr(error, "errors", None)  # pydantic's ValidationError, duck-typed
    return callable(errors) and any(e.get("type") == "json_invalid" for e in errors())


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # JSON.parse refuses NaN and Infinity; so do we


def _parse_like_javascript(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON text with the standard library: JSON.parse's grammar, UTF-8 only."""
    text = data if isinstance(data, str) else str(data, "utf-8")
    return json.loads(text, parse_constant=_refuse_constant)


def _non_finite(value: Any) -> bool:
    """Whether ``value`` holds a NaN or an infinity anywhere (as msgspec would encode it)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (str, int, bytes)) or value is None:
        return False
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_non_finite(v) for v in value)
    try:  # dataclasses, Structs, pydantic models...: look at their builtin form
        builtins = msgspec.to_builtins(value, enc_hook=_enc_hook, str_keys=True)
    except (TypeError, ValueError):
        return False
    return builtins is not value and _non_finite(builtins)


def _encode_escaping_surrogates(value: Any) -> bytes:
    r"""The fast path's bytes, with each unpaired surrogate as ``JSON.stringify`` writes it.

    msgspec writes UTF-8, which cannot hold an unpaired surrogate. JavaScript strings can, and
    ``JSON.stringify`` writes one as a ``\udXXX`` escape (lower-case hex); we do the same, so
    a string read from a GramIO bot goes back unchanged. Everything else (key order, numbers,
    escapes, how dataclasses or pydantic models become JSON) is msgspec's, through
    ``msgspec.to_builtins``.
    """
    out: list[bytes] = []
    _emit(msgspec.to_builtins(value, enc_hook=_enc_hook, str_keys=True), out)
    return b"".join(out)


def _emit(value: Any, out: list[bytes]) -> None:
    if isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, dict):
        out.append(b"{")
        for i, (k, v) in enumerate(value.items()):
            if i:
                out.append(b",")
            out.append(_string(k))
            out.append(b":")
            _emit(v, out)
        out.append(b"}")
    elif isinstance(value, (list, tuple)):
        out.append(b"[")
        for i, item in enumerate(value):
            if i:
                out.append(b",")
            _emit(item, out)
        out.append(b"]")
    else:  # numbers, booleans, None: msgspec's own bytes
        out.append(_PLAIN_JSON(value))


def _string(text: str) -> bytes:
    if _SURROGATE.search(text) is None:
        return _PLAIN_JSON(text)
    # JavaScript reads two surrogates in a row as one character: join such pairs first (a
    # Python str may hold them apart), so that only the unpaired ones are escaped.
    text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    pieces = _SURROGATE.split(text)  # text, surrogate, text, ..., text
    body = b"".join(
        b"\\u%04x" % ord(piece) if i % 2 else _PLAIN_JSON(piece)[1:-1]
        for i, piece in enumerate(pieces)
    )
    return b'"' + body + b'"'


class _MsgspecCodec:
    """Shared machinery: one encoder, one untyped decoder, typed decoders cached per type."""

    __slots__ = ("_any", "_decoders", "encode")

    encode: Callable[[Any], bytes]
    _any: Callable[[bytes], Any]
    _decoders: dict[Any, Callable[[bytes], Any]]

    def __init__(self) -> None:
        self.encode = self._wrap_encoder(self._make_encoder().encode)
        # A bound C method: no Python frame between the storage and msgspec on the hot path.
        # It may refuse input that decode() accepts (see JSONCodec): callers that use it fall
        # back to decode(data, Any), as the storage facade does.
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
        try:
            return decoder(data)
        except ValueError as e:  # msgspec's and pydantic's errors are ValueErrors
            return self._recover(data, type, e)

    def _wrap_encoder(self, encode: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
        return encode

    def _recover(self, data: bytes, tp: Any, error: ValueError) -> Any:
        """Called when the fast decoder raised ``error``: decode another way, or re-raise."""
        raise error

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
    """Compact UTF-8 JSON through msgspec, read and written the way GramIO's bots do.

    Values may be JSON builtins, dataclasses, ``msgspec.Struct``, ``TypedDict``, ``datetime``,
    ``UUID``, ``Enum``, ``Decimal`` and pydantic models. The bytes match ``JSON.stringify``'s
    except for the float notations listed in the module docstring; anything ``JSON.parse``
    reads decodes, unpaired surrogates included.
    """

    __slots__ = ()

    # An int encodes as its ASCII digits, so backends may count natively (Redis INCRBY).
    plain_integers = True

    def _make_encoder(self) -> msgspec.json.Encoder:
        return msgspec.json.Encoder(enc_hook=_enc_hook)

    def _wrap_encoder(self, encode: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
        def encode_json(value: Any) -> bytes:
            try:
                data = encode(value)
            except UnicodeEncodeError:  # a str holding an unpaired surrogate: msgspec refuses
                data = _encode_escaping_surrogates(value)
            # msgspec (like JSON.stringify) writes NaN and infinities as null, which would read
            # back as None: refuse them. Only output holding a null can hide one, so the common
            # case pays one search (a compiled pattern: 150 ns here against 330 ns for
            # `b"null" in data`, measured on the memory bench's session value).
            if _NULL(data) is not None and _non_finite(value):
                raise ValueError("JSON cannot store NaN or infinity (they would read back as null)")
            return data

        return encode_json

    def _make_decoder(self, tp: Any) -> msgspec.json.Decoder[Any]:
        return msgspec.json.Decoder(tp)

    def _pydantic_decoder(self, tp: Any) -> Callable[[bytes], Any]:
        # pydantic-core parses JSON itself: one pass instead of decode-then-validate.
        return tp.model_validate_json  # type: ignore[no-any-return]

    def _recover(self, data: bytes, tp: Any, error: ValueError) -> Any:
        r"""Parse what ``JSON.parse`` accepts and the fast parser refused, then validate it.

        The fast parsers refuse an escaped unpaired surrogate (``"\ud83d"``, written by
        ``JSON.stringify`` for a string a JavaScript ``.slice()`` cut inside an emoji) and
        numbers beyond the float range (``1e400``, Infinity to JavaScript). The standard
        library's parser reads both, as Python's ``json`` module always has; the result is then
        validated as ``tp`` by msgspec (or pydantic), exactly as the fast path would.
        """
        if not _parser_refused(error):
            raise error
        try:
            value = _parse_like_javascript(data)
        except ValueError:
            raise error from None
        if tp is Any:
            return value
        if _is_pydantic_model(tp):
            return tp.model_validate(value)
        return msgspec.convert(value, tp, str_keys=True)

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
