"""Compression as a codec that wraps another codec, so it works on every backend.

Layout of a stored value:

* below ``min_size`` encoded bytes, the inner codec's bytes unchanged when the inner codec is
  text JSON (so small values, counters included, stay readable by GramIO and count natively);
  for other inner codecs a ``0x00`` header byte then the inner bytes;
* ``0x01`` then a zlib stream, or ``0x02`` then a zstd frame (``zstandard``, extra ``[zstd]``).

No JSON text starts with ``0x00``-``0x02``, so every form reads back whichever library wrote
it, and values written before compression was turned on (plain JSON) still decode. A value
that does not shrink is stored uncompressed. A zstd value needs ``zstandard`` to be read.
Compressed values are not readable by GramIO's adapters.
"""

from __future__ import annotations

import zlib
from typing import Any, Literal

from .._codecs import JSON, Codec
from .._errors import ConfigurationError

__all__ = ["CompressedCodec"]

RAW, ZLIB, ZSTD = 0x00, 0x01, 0x02
_HEADERS = b"\x00\x01\x02"
# Decompressed values larger than this are refused: a hostile stored value must not make a
# reader allocate without bound (a "zip bomb").
MAX_DECOMPRESSED = 256 * 1024 * 1024


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


class CompressedCodec:
    """Compresses what ``inner`` encodes when it is at least ``min_size`` bytes.

    Args:
        inner: The codec whose output is compressed (default JSON).
        min_size: Values whose encoding is shorter stay uncompressed.
        algorithm: ``"zstd"`` (needs ``pip install 'gramio-storage[zstd]'``), ``"zlib"``, or
            ``"auto"`` (zstd when ``zstandard`` is installed, zlib otherwise).
        level: Compression level (zstd 1-22, default 3; zlib 1-9, default 6).

    Example::

        storage = RedisStorage.from_url(url, codec=CompressedCodec(JSON, min_size=512))
    """

    __slots__ = (
        "_cctx",
        "_dctx",
        "_inner",
        "_raw_is_plain",
        "algorithm",
        "level",
        "min_size",
        "plain_integers",
    )

    def __init__(
        self,
        inner: Codec = JSON,
        *,
        min_size: int = 256,
        algorithm: Literal["auto", "zstd", "zlib"] = "auto",
        level: int | None = None,
    ) -> None:
        if not (hasattr(inner, "encode") and hasattr(inner, "decode")):
            raise ConfigurationError(f"inner must be a codec, got {inner!r}")
        if getattr(inner, "stores_references", False):
            raise ConfigurationError("CompressedCodec cannot wrap a reference codec")
        if min_size.__class__ is not int or min_size < 0:
            raise ConfigurationError(f"min_size must be a non-negative int, got {min_size!r}")
        zstandard = _zstd()
        if algorithm == "auto":
            algorithm = "zstd" if zstandard is not None else "zlib"
        if algorithm == "zstd" and zstandard is None:
            raise ConfigurationError(
                "CompressedCodec(algorithm='zstd') needs zstandard: "
                "pip install 'gramio-storage[zstd]'"
            )
        if algorithm not in ("zstd", "zlib"):
            raise ConfigurationError(
                f"algorithm must be 'auto', 'zstd' or 'zlib', got {algorithm!r}"
            )
        self._inner = inner
        self.min_size = min_size
        self.algorithm = algorithm
        self.level = level if level is not None else (3 if algorithm == "zstd" else 6)
        # JSON text never starts with a header byte, so small JSON values go out unchanged.
        self._raw_is_plain = isinstance(inner, type(JSON))
        # Counters stay ASCII digits (native INCRBY) when they can never reach min_size.
        self.plain_integers = bool(getattr(inner, "plain_integers", False)) and (
            self._raw_is_plain and min_size > 24
        )
        self._cctx = zstandard.ZstdCompressor(level=self.level) if algorithm == "zstd" else None
        self._dctx = zstandard.ZstdDecompressor() if zstandard is not None else None

    @property
    def inner(self) -> Codec:
        """The wrapped codec."""
        return self._inner

    def encode(self, value: Any) -> bytes:
        """Encode with the inner codec, then compress when large enough and worth it."""
        data = self._inner.encode(value)
        if len(data) >= self.min_size:
            if self._cctx is not None:
                packed: bytes = bytes((ZSTD,)) + self._cctx.compress(data)
            else:
                packed = bytes((ZLIB,)) + zlib.compress(data, self.level)
            if len(packed) < len(data):
                return packed
        if self._raw_is_plain:
            return bytes(data)
        return bytes((RAW,)) + data

    def decode(self, data: bytes, type: Any = Any) -> Any:
        """Decompress (whatever the header says), then decode with the inner codec."""
        return self._inner.decode(self.unpack(data), type)

    def unpack(self, data: bytes) -> bytes:
        """The inner codec's bytes for a stored value (any of the three forms)."""
        data = bytes(data)
        if not data or data[0] not in _HEADERS:
            return data
        head, body = data[0], data[1:]
        if head == RAW:
            return body
        if head == ZLIB:
            d = zlib.decompressobj()
            out: bytes = d.decompress(body, MAX_DECOMPRESSED)
            if d.unconsumed_tail or not d.eof:
                raise ValueError("zlib value is truncated or larger than the decompression limit")
            return out
        if self._dctx is None:
            raise ValueError(
                "the value is zstd-compressed: pip install 'gramio-storage[zstd]' to read it"
            )
        parts: list[bytes] = []
        size = 0
        with self._dctx.stream_reader(body) as reader:
            while chunk := reader.read(1 << 20):
                size += len(chunk)
                if size > MAX_DECOMPRESSED:
                    raise ValueError("zstd value is larger than the decompression limit")
                parts.append(chunk)
        return b"".join(parts)

    def __repr__(self) -> str:
        return (
            f"CompressedCodec({self._inner!r}, min_size={self.min_size}, "
            f"algorithm={self.algorithm!r})"
        )
