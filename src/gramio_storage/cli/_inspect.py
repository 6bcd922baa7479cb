"""The inspection and editing commands: ``ls``, ``get``, ``set``, ``del``, ``ttl``, ``stats``."""

from __future__ import annotations

import heapq
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec

from .._errors import KeyNotFoundError
from .._validate import resolve_key
from ._context import NotFoundError, UsageError
from ._raw import DEFAULT_BATCH, Reader, batched_keys
from ._secrets import mask_url
from ._ui import (
    fmt_size,
    fmt_ttl,
    print_table,
    progress,
    require_tables,
    wants_progress,
    write_json,
)

if TYPE_CHECKING:
    import argparse

    from ._context import Context

__all__ = ["cmd_del", "cmd_get", "cmd_ls", "cmd_set", "cmd_stats", "cmd_ttl"]

_raw_decoder = msgspec.json.Decoder(msgspec.Raw)
# Distinct prefixes `stats` tracks; past this, new ones are counted under "(other)" so that
# memory stays bounded on keys whose first segment is unique (a user id, say).
_MAX_PREFIXES = 100_000


def _ttl_out(ttl: float | None) -> float | None:
    return None if ttl is None else round(max(ttl, 0.0), 3)


async def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    """List keys with their TTL and value size."""
    limit: int = args.limit
    if limit < 0:
        raise UsageError("--limit must be >= 0 (0 lists every key)")
    if not args.json:
        require_tables()
    async with ctx.open(args.url, read_only=True) as storage:
        reader = Reader(storage)
        rows: list[tuple[str, float | None, int]] = []
        shown = 0
        truncated = False
        out = sys.stdout.buffer
        if args.json:
            out.write(b"[")
        async for batch in batched_keys(storage, args.prefix, DEFAULT_BATCH, reader):
            if limit and shown + len(batch) > limit:
                batch = batch[: limit - shown + 1]  # one extra tells us there is more
            entries = await reader.read(batch)
            now = time.monotonic()
            if limit and shown + len(entries) > limit:
                truncated = True
                entries = entries[: limit - shown]
            for entry in entries:
                ttl = _ttl_out(entry.ttl(now))
                if args.json:
                    item = {"key": entry.key, "ttl": ttl, "size": len(entry.data)}
                    out.write((b",\n" if shown else b"\n") + msgspec.json.encode(item))
                else:
                    rows.append((entry.key, ttl, len(entry.data)))
                shown += 1
            if truncated:
                break
        if args.json:
            out.write(b"\n]\n" if shown else b"]\n")
            out.flush()
        else:
            rows.sort()
            caption = f"{shown} key{'s' if shown != 1 else ''}"
            if truncated:
                caption = f"first {shown} keys (--limit {limit}); pass --limit 0 for all"
            print_table(
                [("KEY", "left"), ("TTL", "right"), ("SIZE", "right")],
                [(k, fmt_ttl(t), fmt_size(s)) for k, t, s in rows],
                caption=caption,
            )
        if truncated:
            ctx.info(f"more keys exist: only the first {limit} are listed")
        if not reader.ttl_supported:
            ctx.warn(f"the {storage.backend_name} backend cannot report TTLs; shown as none")
    return 0


async def cmd_get(ctx: Context, args: argparse.Namespace) -> int:
    """Print the value stored under a key."""
    async with ctx.open(args.url, read_only=True) as storage:
        full = resolve_key(args.key, storage.prefix, storage.capabilities)
        data = await storage.backend.get(full)
    if data is None:
        raise NotFoundError(f"key {args.key!r} not found")
    data = bytes(data)
    out = sys.stdout.buffer
    if args.raw:
        out.write(data)
        if sys.stdout.isatty() and not data.endswith(b"\n"):
            out.write(b"\n")
    else:
        try:
            _raw_decoder.decode(data)
            data.decode("utf-8")
        except (msgspec.DecodeError, UnicodeDecodeError) as e:
            raise UsageError(
                f"the value under key {args.key!r} is not JSON ({len(data)} bytes; it was "
                f"written with another codec?): use --raw to print its bytes"
            ) from e
        out.write(msgspec.json.format(data, indent=2) + b"\n")
    out.flush()
    return 0


def parse_json_value(text: str, what: str = "VALUE") -> Any:
    """Decode a JSON value given on the command line (``-`` reads it from stdin)."""
    data = sys.stdin.buffer.read() if text == "-" else text.encode("utf-8", "surrogateescape")
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as e:
        hint = ""
        if text and text[0] not in '{["-0123456789tfn':
            hint = f"; to store the string, quote it as JSON: '\"{text[:20]}\"'"
        raise UsageError(f"{what} is not valid JSON: {e}{hint}") from e


async def cmd_set(ctx: Context, args: argparse.Namespace) -> int:
    """Store a JSON value under a key."""
    value = parse_json_value(args.value)
    async with ctx.open(args.url) as storage:
        await storage.set(args.key, value, ttl=args.ttl)
    ttl = f", expires in {fmt_ttl(args.ttl)}" if args.ttl is not None else ""
    ctx.info(f"set {args.key!r}{ttl}")
    return 0


async def cmd_del(ctx: Context, args: argparse.Namespace) -> int:
    """Delete keys; report how many existed."""
    async with ctx.open(args.url) as storage:
        deleted = await storage.delete_many(args.keys)
    if args.json:
        write_json({"deleted": deleted, "requested": len(set(args.keys))})
    else:
        ctx.info(f"deleted {deleted} of {len(set(args.keys))} key(s)")
    return 0


async def cmd_ttl(ctx: Context, args: argparse.Namespace) -> int:
    """Print the seconds a key has left."""
    async with ctx.open(args.url, read_only=True) as storage:
        try:
            ttl = await storage.ttl(args.key)
        except KeyNotFoundError as e:
            raise NotFoundError(f"key {args.key!r} not found") from e
    if args.json:
        write_json({"key": args.key, "ttl": _ttl_out(ttl)})
    elif ttl is None:
        print("no expiry")
    else:
        print(f"{max(ttl, 0.0):.3f}")
    return 0


def _prefix_of(key: str, sep: str, depth: int) -> str:
    parts = key.split(sep, depth)
    if len(parts) == 1:
        return "(none)"
    return sep.join(parts[: min(depth, len(parts) - 1)]) + sep


async def cmd_stats(ctx: Context, args: argparse.Namespace) -> int:
    """Count keys and bytes, overall and by prefix."""
    if args.depth < 1 or args.top < 1:
        raise UsageError("--depth and --top must be >= 1")
    if not args.separator:
        raise UsageError("--separator must not be empty")
    count = size = with_ttl = 0
    largest = 0
    soonest: float | None = None
    prefixes: dict[str, list[int]] = {}
    if not args.json:
        require_tables()  # before the scan, and before anything reaches stdout
    async with ctx.open(args.url, read_only=True) as storage:
        reader = Reader(storage)
        with progress("scanning", None, wants_progress(ctx.quiet)) as bar:
            async for batch in batched_keys(storage, args.prefix, DEFAULT_BATCH, reader):
                entries = await reader.read(batch)
                now = time.monotonic()
                for entry in entries:
                    n = len(entry.data)
                    count += 1
                    size += n
                    largest = max(largest, n)
                    ttl = entry.ttl(now)
                    if ttl is not None:
                        with_ttl += 1
                        soonest = ttl if soonest is None else min(soonest, ttl)
                    p = _prefix_of(entry.key[len(args.prefix) :], args.separator, args.depth)
                    slot = prefixes.get(p)
                    if slot is None:
                        if len(prefixes) >= _MAX_PREFIXES:
                            p = "(other)"
                        slot = prefixes.setdefault(p, [0, 0])
                    slot[0] += 1
                    slot[1] += n
                bar.advance(len(entries))
        ttl_supported = reader.ttl_supported
    top = heapq.nlargest(args.top, prefixes.items(), key=lambda item: (item[1][0], item[1][1]))
    groups = [
        {"prefix": p if p in ("(none)", "(other)") else args.prefix + p, "keys": c, "bytes": b}
        for p, (c, b) in top
    ]
    if args.json:
        write_json(
            {
                "keys": count,
                "bytes": size,
                "keys_with_ttl": with_ttl if ttl_supported else None,
                "largest_value": largest,
                "soonest_expiry": _ttl_out(soonest),
                "prefix": args.prefix,
                "top_prefixes": groups,
            }
        )
        return 0
    # rich is known to be there (require_tables above): nothing below can fail half way.
    where = mask_url(args.url) + (f" (prefix {args.prefix!r})" if args.prefix else "")
    print(ctx.secrets.scrub(where))
    print_table(
        [("", "left"), ("", "right")],
        [
            ("keys", f"{count:,}"),
            ("total size", f"{fmt_size(size)} ({size:,} bytes)"),
            ("average size", fmt_size(size // count) if count else "-"),
            ("largest value", fmt_size(largest)),
            ("keys with TTL", f"{with_ttl:,}" if ttl_supported else "unknown"),
            ("soonest expiry", fmt_ttl(soonest) if soonest is not None else "-"),
        ],
        header=False,
    )
    if groups:
        print(f"top prefixes (depth {args.depth}, separator {args.separator!r})")
        print_table(
            [("PREFIX", "left"), ("KEYS", "right"), ("SHARE", "right"), ("SIZE", "right")],
            [
                (
                    str(g["prefix"]),
                    f"{g['keys']:,}",
                    f"{100 * int(g['keys']) / count:.1f}%",
                    fmt_size(int(g["bytes"])),
                )
                for g in groups
            ],
        )
    return 0
