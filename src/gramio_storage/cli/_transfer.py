"""The bulk commands: ``export`` to JSON Lines, ``import`` from it, ``copy`` between storages.

The export format is one JSON object per line::

    {"key":"user:1","value":{"name":"Alice"},"ttl":3599.871}
    {"key":"blob","value_base64":"gqRuYW1lpUFsaWNl","ttl":null}

``value`` is the stored JSON embedded verbatim (not decoded and re-encoded, so it round-trips
byte for byte); bytes that are not a single line of valid UTF-8 JSON (another codec, a pretty
printed document) go in ``value_base64`` instead. ``ttl`` is the seconds the key had left when
it was exported, or ``null`` for no expiry; ``import`` applies it from the moment it writes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import msgspec

from ._context import CliError, UsageError
from ._raw import Entry, Reader, Writer, WriteStats, batched_keys
from ._secrets import mask_url
from ._ui import progress, wants_progress, write_json

if TYPE_CHECKING:
    import argparse

    from .._storage import BaseStorage
    from ._context import Context

__all__ = ["cmd_copy", "cmd_export", "cmd_import", "encode_line", "parse_line"]

_enc = msgspec.json.Encoder()
_raw_decoder = msgspec.json.Decoder(msgspec.Raw)


# ---------------------------------------------------------------------------- the line format


def _embeddable(data: bytes) -> bool:
    """Whether ``data`` can sit in a line verbatim: one line of valid UTF-8 JSON, unpadded."""
    if not data or b"\n" in data or b"\r" in data or data[:1].isspace() or data[-1:].isspace():
        return False
    try:
        _raw_decoder.decode(data)
        data.decode("utf-8")
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False
    return True


def encode_line(key: str, data: bytes, ttl: float | None) -> bytes:
    """One export line for a stored key (``ttl``: seconds left, or None)."""
    t = b"null" if ttl is None else _enc.encode(round(ttl, 3))
    if _embeddable(data):
        return b'{"key":' + _enc.encode(key) + b',"value":' + data + b',"ttl":' + t + b"}\n"
    b64 = base64.b64encode(data)
    return b'{"key":' + _enc.encode(key) + b',"value_base64":"' + b64 + b'","ttl":' + t + b"}\n"


class _Record(msgspec.Struct):
    key: str
    value: msgspec.Raw = msgspec.Raw()  # empty: absent
    value_base64: str | None = None
    ttl: float | None = None


_record_decoder = msgspec.json.Decoder(_Record)


class InputError(CliError):
    """A line of an import file is malformed (the message names the line)."""


def parse_line(line: bytes, number: int, name: str) -> tuple[str, bytes, float | None] | None:
    """Parse one import line into ``(key, bytes, ttl)``; None for a blank line.

    Raises:
        InputError: The line is not a valid record; the message names ``name`` and ``number``.
    """
    if not line.strip():
        return None
    try:
        record = _record_decoder.decode(line)
    except msgspec.DecodeError as e:
        raise InputError(f"{name}, line {number}: {e}") from e
    if not record.key:
        raise InputError(f"{name}, line {number}: the key is empty")
    has_value = len(record.value) > 0
    if has_value == (record.value_base64 is not None):
        raise InputError(
            f"{name}, line {number} (key {record.key!r}): expected exactly one of "
            '"value" and "value_base64"'
        )
    if has_value:
        data = bytes(record.value)
    else:
        try:
            data = base64.b64decode(record.value_base64 or "", validate=True)
        except (binascii.Error, ValueError) as e:
            raise InputError(
                f"{name}, line {number} (key {record.key!r}): value_base64 is not base64: {e}"
            ) from e
    ttl = record.ttl
    if ttl is not None and not (0 < ttl < math.inf):
        raise InputError(
            f"{name}, line {number} (key {record.key!r}): ttl must be a positive number of "
            f"seconds or null, got {ttl!r}"
        )
    return record.key, data, ttl


# ---------------------------------------------------------------------------- export


async def cmd_export(ctx: Context, args: argparse.Namespace) -> int:
    """Write every key (under a prefix) as JSON Lines, streaming."""
    started = time.monotonic()
    count = 0
    async with ctx.open(args.url, read_only=True) as storage:
        reader = Reader(storage)
        total = await _count(storage, args.prefix) if wants_progress(ctx.quiet) else None
        with (
            _output(args.output) as out,
            progress("exporting", total, wants_progress(ctx.quiet)) as bar,
        ):
            async for batch in batched_keys(storage, args.prefix, args.batch_size, reader):
                entries = await reader.read(batch)
                now = time.monotonic()
                lines = []
                for e in entries:
                    ttl = e.ttl(now)
                    if ttl is not None and ttl <= 0:
                        continue  # expired while we read it
                    lines.append(encode_line(e.key, e.data, ttl))
                out.write(b"".join(lines))
                count += len(lines)
                bar.advance(len(lines))
        if not reader.ttl_supported:
            ctx.warn(f"the {storage.backend_name} backend cannot report TTLs; exported as null")
    where = "stdout" if args.output in (None, "-") else repr(args.output)
    ctx.info(f"exported {count} key(s) to {where} in {time.monotonic() - started:.2f}s")
    return 0


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[bytes]]:
    """stdout, or a file that only appears (atomically renamed) once the export completed."""
    if path in (None, "-"):
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    assert path is not None
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as e:
        raise CliError(f"cannot write {path!r}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


async def _count(storage: BaseStorage, prefix: str) -> int:
    n = 0
    async for _ in storage.keys(prefix):
        n += 1
    return n


# ---------------------------------------------------------------------------- import


@contextlib.contextmanager
def _input(path: str | None, spool: bool) -> Iterator[tuple[IO[bytes], str]]:
    """The import source and its display name.

    stdin is spooled to a temporary file when it must be read twice (validation, then import).
    """
    if path in (None, "-"):
        if not spool:
            yield sys.stdin.buffer, "<stdin>"
            return
        with tempfile.TemporaryFile() as tmp:
            shutil.copyfileobj(sys.stdin.buffer, tmp, 1 << 20)
            tmp.seek(0)
            yield tmp, "<stdin>"
        return
    assert path is not None
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the with body
    except OSError as e:
        raise CliError(f"cannot read {path!r}: {e.strerror or e}") from e
    with f:
        yield f, path


def _records(f: IO[bytes], name: str) -> Iterator[tuple[str, bytes, float | None]]:
    for number, line in enumerate(f, 1):
        record = parse_line(line, number, name)
        if record is not None:
            yield record


async def cmd_import(ctx: Context, args: argparse.Namespace) -> int:
    """Load a JSON Lines export into a storage, batched, TTLs restored."""
    started = time.monotonic()
    validate = not args.no_validate
    with _input(args.file, spool=validate) as (f, name):
        total = None
        if validate:
            # Pass 1: the whole file must parse before anything is written.
            total = sum(1 for _ in _records(f, name))
            f.seek(0)
        # A dry run only reads: it never creates the destination (SQLite opens read-only).
        async with ctx.open(args.url, read_only=args.dry_run) as storage:
            writer = Writer(storage, overwrite=args.overwrite, dry_run=args.dry_run)
            try:
                with progress("importing", total, wants_progress(ctx.quiet)) as bar:
                    batch: list[Entry] = []
                    for key, data, ttl in _records(f, name):
                        deadline = None if ttl is None else time.monotonic() + ttl
                        batch.append(Entry(key, data, deadline))
                        if len(batch) >= args.batch_size:
                            await writer.write(batch)
                            bar.advance(len(batch))
                            batch = []
                    await writer.write(batch)
                    bar.advance(len(batch))
            except InputError as e:
                if validate:  # the file changed between the two passes
                    raise
                raise InputError(
                    f"{e}; {writer.stats.written} record(s) before it were already written "
                    "(--no-validate)"
                ) from e
    _summary(ctx, args, "imported", writer.stats, time.monotonic() - started, f"from {name}")
    return 0


# ---------------------------------------------------------------------------- copy


async def cmd_copy(ctx: Context, args: argparse.Namespace) -> int:
    """Copy keys (under a prefix) from one storage to another, TTLs preserved."""
    started = time.monotonic()
    src_url = ctx.secrets.expand(args.src, "SRC_URL")
    dst_url = ctx.secrets.expand(args.dst, "DST_URL")
    if src_url == dst_url:
        raise UsageError("SRC_URL and DST_URL are the same storage")
    async with (
        ctx.open(args.src, "SRC_URL", read_only=True) as src,
        # A dry run only reads the destination too: it never creates it.
        ctx.open(args.dst, "DST_URL", read_only=args.dry_run) as dst,
    ):
        reader = Reader(src)
        writer = Writer(dst, overwrite=args.overwrite, dry_run=args.dry_run)
        show = wants_progress(ctx.quiet)
        total = await _count(src, args.prefix) if show else None
        with progress("copying", total, show) as bar:
            async for batch in batched_keys(src, args.prefix, args.batch_size, reader):
                entries = await reader.read(batch)
                await writer.write(entries)
                bar.advance(len(batch))
        if not reader.ttl_supported:
            ctx.warn(f"the {src.backend_name} source cannot report TTLs; copied without expiry")
    where = f"from {mask_url(args.src)} to {mask_url(args.dst)}"
    _summary(ctx, args, "copied", writer.stats, time.monotonic() - started, where)
    return 0


def _summary(
    ctx: Context, args: argparse.Namespace, verb: str, stats: WriteStats, elapsed: float, where: str
) -> None:
    if args.json:
        write_json(
            {
                "dry_run": args.dry_run,
                "written": stats.written,
                "skipped_existing": stats.skipped,
                "replaced_existing": stats.replaced if args.dry_run else None,
                "expired": stats.expired,
                "ttl_raised_to_minimum": stats.ttl_raised,
                "bytes": stats.bytes,
                "seconds": round(elapsed, 3),
            }
        )
        return
    rate = f" ({stats.written / elapsed:,.0f} keys/s)" if elapsed > 0 and stats.written else ""
    head = f"dry run: would have {verb}" if args.dry_run else verb
    extra = []
    if stats.skipped:
        extra.append(f"{stats.skipped} skipped (already present, --no-overwrite)")
    if args.dry_run and stats.replaced:
        extra.append(f"{stats.replaced} of them already present (would be replaced)")
    if stats.expired:
        extra.append(f"{stats.expired} expired in transit (not written)")
    if stats.ttl_raised:
        extra.append(f"{stats.ttl_raised} TTL(s) raised to the destination's minimum")
    tail = f"; {'; '.join(extra)}" if extra else ""
    ctx.info(f"{head} {stats.written} key(s) {where} in {elapsed:.2f}s{rate}{tail}")
