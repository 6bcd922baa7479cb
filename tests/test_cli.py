"""The gramio-storage command line, against real SQLite files, a real redis-server and PostgreSQL.

Most tests call ``main()`` in-process (fast); the ones about the process itself (console script,
exit codes, TTY detection, missing extras, being killed) run it as a real subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from _cli_backends import (  # noqa: F401  (fixtures)
    BINARY_KINDS,
    BINARY_VALUE,
    KINDS,
    ODD_VALUES,
    Backends,
    assert_same,
    backends_fixture,
    cli_redis_fixture,
    seed,
    snapshot,
)
from _cloudflare_server import cloudflare_kv  # noqa: F401  (fixture)
from _pg_server import pg_server, postgres_dsn  # noqa: F401  (fixtures)
from _redis_server import (  # noqa: F401  (fixtures)
    RedisCluster,
    RedisServer,
    flush,
    free_port,
    redis_cluster_session,
)
from _support import eventually_sync
from gramio_storage import (
    BaseStorage,
    Capabilities,
    InvalidKeyError,
    UnsupportedOperationError,
    storage_from_url,
)
from gramio_storage.cli import _raw as raw_module
from gramio_storage.cli import main
from gramio_storage.memory import MemoryBackend

SCRIPT = Path(sys.executable).parent / "gramio-storage"


# ------------------------------------------------------------------------------- helpers


class Run:
    """The outcome of one CLI invocation."""

    def __init__(self, code: int, out: bytes, err: bytes) -> None:
        self.code = code
        self.out = out
        self.err = err.decode()

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"Run(code={self.code}, out={self.out[:300]!r}, err={self.err[:500]!r})"


@pytest.fixture
def cli(capfdbinary: pytest.CaptureFixture[bytes]) -> Any:
    """Run the CLI in this process: ``cli("ls", url)`` -> :class:`Run`."""

    def run(*args: str) -> Run:
        capfdbinary.readouterr()
        code = main(list(args))
        out, err = capfdbinary.readouterr()
        return Run(code, out, err)

    return run


def run_process(
    *args: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    unset: tuple[str, ...] | list[str] = (),
    script: bool = False,
) -> Run:
    """Run the CLI as a real subprocess (the console script, or ``python -m``)."""
    argv = [str(SCRIPT)] if script else [sys.executable, "-m", "gramio_storage.cli"]
    environ = {k: v for k, v in os.environ.items() if k not in unset}
    done = subprocess.run(
        [*argv, *args],
        input=stdin or b"",
        capture_output=True,
        env={**environ, **(env or {})},
        timeout=120,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def run_blocked(module: str, *args: str) -> Run:
    """Run the CLI in a subprocess where importing ``module`` fails, as if it were missing."""
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from gramio_storage.cli import main\n"
        f"raise SystemExit(main({list(args)!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=False
    )
    return Run(done.returncode, done.stdout, done.stderr)


def one_line_error(run: Run) -> str:
    """The run failed with exactly one line on stderr, no traceback; return that line."""
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run
    assert "Traceback" not in run.err, run
    assert lines[0].startswith("gramio-storage: error: "), run
    return lines[0]


def fill(url: str, items: dict[str, bytes], ttl: float | None = None) -> None:
    async def go() -> None:
        async with storage_from_url(url) as storage:
            await storage.backend.set_many(list(items.items()), ttl)

    asyncio.run(go())


def dump(url: str, prefix: str = "") -> dict[str, Any]:
    return asyncio.run(snapshot(url, prefix))


def count(url: str) -> int:
    async def go() -> int:
        async with storage_from_url(url) as storage:
            return len([k async for k in storage.keys()])

    return asyncio.run(go())


# ------------------------------------------------------------------------------- the process


def test_console_script_help_lists_every_command() -> None:
    run = run_process("--help", script=True)
    assert run.code == 0, run
    for command in ("ls", "get", "set", "del", "ttl", "stats", "export", "import", "copy"):
        assert f"    {command} " in run.out.decode(), command
    assert "exit codes" in run.out.decode()


def test_python_dash_m_reports_usage_errors_with_exit_code_2() -> None:
    run = run_process("frobnicate")
    assert run.code == 2
    assert "invalid choice: 'frobnicate'" in run.err
    assert run_process("get", "sqlite:///x.db").code == 2  # KEY missing


def test_every_command_on_a_sqlite_file_as_a_subprocess(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    started = time.monotonic()
    assert run_process("set", url, "user:1", '{"name": "Alice"}', "--ttl", "3600").code == 0
    assert run_process("set", url, "user:2", "[1, 2]").code == 0

    def ttl_ok(ttl: float) -> bool:  # whatever the machine's load: only real time elapsed
        return 3600 - (time.monotonic() - started) - 0.01 <= ttl <= 3600

    got = run_process("get", url, "user:1")
    assert (got.code, got.out) == (0, b'{\n  "name": "Alice"\n}\n')
    assert run_process("get", url, "user:1", "--raw").out == b'{"name":"Alice"}'
    listing = run_process("ls", url, "--json")
    assert [(e["key"], e["size"]) for e in listing.json] == [("user:1", 16), ("user:2", 5)]
    assert ttl_ok(listing.json[0]["ttl"]) and listing.json[1]["ttl"] is None
    ttl = run_process("ttl", url, "user:1", "--json").json
    assert ttl_ok(ttl["ttl"])
    stats = run_process("stats", url, "--json").json
    assert (stats["keys"], stats["bytes"], stats["keys_with_ttl"]) == (2, 21, 1)
    exported = run_process("export", url)
    assert exported.out.count(b"\n") == 2
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert run_process("import", other, stdin=exported.out).code == 0
    assert run_process("copy", url, f"sqlite:///{tmp_path / 'copy.db'}").code == 0
    assert run_process("del", url, "user:1", "user:2", "nope").code == 0
    assert run_process("get", url, "user:1").code == 3
    assert dump(other).keys() == {"user:1", "user:2"}


# ------------------------------------------------------------------------------- inspection


@pytest.mark.parametrize("kind", KINDS)
def test_set_get_ttl_ls_stats_del(kind: str, backends: Backends, cli: Any) -> None:
    url = backends.url(kind)
    started = time.monotonic()
    assert cli("set", url, "user:1", '{"name": "Alice", "age": 30}', "--ttl", "120").code == 0
    assert cli("set", url, "user:2", '"plain string"').code == 0
    assert cli("set", url, "counter", "7").code == 0

    got = cli("get", url, "user:1")
    assert got.code == 0
    assert json.loads(got.out) == {"name": "Alice", "age": 30}
    assert got.out.startswith(b"{\n  ")  # pretty printed
    assert cli("get", url, "user:1", "--raw").out == b'{"name":"Alice","age":30}'  # compact

    ttl = cli("ttl", url, "user:1")
    # Cloudflare KV keeps whole seconds (up to 2 s lost); beyond that, only real time elapsed.
    assert ttl.code == 0 and 118 - (time.monotonic() - started) < float(ttl.out) <= 120
    assert cli("ttl", url, "counter").out == b"no expiry\n"
    assert cli("ttl", url, "counter", "--json").json == {"key": "counter", "ttl": None}

    listing = cli("ls", url, "--json")
    assert sorted((e["key"], e["size"], e["ttl"] is None) for e in listing.json) == [
        ("counter", 1, True),
        ("user:1", 25, False),
        ("user:2", 14, True),
    ]
    assert [e["key"] for e in cli("ls", url, "--json", "--prefix", "user:").json] in (
        ["user:1", "user:2"],
        ["user:2", "user:1"],
    )
    limited = cli("ls", url, "--json", "--limit", "2")
    assert len(limited.json) == 2 and "only the first 2" in limited.err
    table = cli("ls", url)
    assert table.code == 0
    assert b"user:1" in table.out and b"25 B" in table.out and b"3 keys" in table.out

    stats = cli("stats", url, "--json").json
    assert stats["keys"] == 3 and stats["bytes"] == 25 + 14 + 1 and stats["keys_with_ttl"] == 1
    assert stats["top_prefixes"][0] == {"prefix": "user:", "keys": 2, "bytes": 39}
    assert b"top prefixes" in cli("stats", url).out

    deleted = cli("del", url, "user:1", "user:2", "missing", "--json")
    assert deleted.json == {"deleted": 2, "requested": 3}
    assert cli("get", url, "user:1").code == 3
    assert cli("ttl", url, "user:1").code == 3
    assert dump(url).keys() == {"counter"}


def test_get_of_a_value_that_is_not_json_points_at_raw(backends: Backends, cli: Any) -> None:
    url = backends.url("sqlite")
    fill(url, {"blob": ODD_VALUES["odd:text"]})
    run = cli("get", url, "blob")
    assert run.code == 2
    assert "--raw" in one_line_error(run)
    assert cli("get", url, "blob", "--raw").out == ODD_VALUES["odd:text"]


def test_set_rejects_invalid_json_and_writes_nothing(backends: Backends, cli: Any) -> None:
    url = backends.url("sqlite")
    run = cli("set", url, "greeting", "hello")
    assert run.code == 2
    line = one_line_error(run)
    assert "VALUE is not valid JSON" in line and "'\"hello\"'" in line
    assert cli("set", url, "k", "1", "--ttl", "-5").code == 2
    assert dump(url) == {}


def test_set_reads_the_value_from_stdin(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert run_process("set", url, "doc", "-", stdin=b'{"from": "stdin"}').code == 0
    assert dump(url)["doc"][0] == b'{"from":"stdin"}'


# ------------------------------------------------------------------------------- export/import


@pytest.mark.parametrize("kind", KINDS)
def test_export_import_round_trip_is_byte_exact_with_ttls(
    kind: str, backends: Backends, cli: Any, tmp_path: Path
) -> None:
    src, dst = backends.url(kind), backends.url(kind)
    expected = asyncio.run(seed(src, 300, binary=kind in BINARY_KINDS))
    out = tmp_path / "backup.jsonl"
    run = cli("export", src, "-o", str(out))
    assert run.code == 0, run
    lines = out.read_bytes().splitlines()
    assert len(lines) == len(expected)
    records = {r["key"]: r for r in map(json.loads, lines)}
    assert records["odd:unicode"]["value"] == {"text": "héllo ✓ 🎉", "ru": "привет"}
    for key in ("odd:pretty", "odd:text", "odd:padded"):
        assert "value_base64" in records[key], key
    if kind in BINARY_KINDS:
        assert records["odd:binary"]["value_base64"] == "gqRuYW1lpUFsaWNlo2FnZR4="
    assert b'"value":{ "spaced" :  [1, 2,\t3] }' in out.read_bytes()  # verbatim

    run = cli("import", dst, str(out))
    assert run.code == 0, run
    assert f"imported {len(expected)} key(s)" in run.err
    assert_same(dump(dst), expected, slack=1.0 + 2 * SLACK[kind])


def test_export_with_prefix_and_import_from_stdin(backends: Backends, tmp_path: Path) -> None:
    src, dst = backends.url("sqlite"), backends.url("sqlite")
    fill(src, {"a:1": b"1", "a:2": b"2", "b:1": b"3"})
    exported = run_process("export", src, "--prefix", "a:")
    assert exported.code == 0
    assert [json.loads(line)["key"] for line in exported.out.splitlines()] == ["a:1", "a:2"]
    assert run_process("import", dst, "-", stdin=exported.out).code == 0
    assert {k: v for k, (v, _) in dump(dst).items()} == {"a:1": b"1", "a:2": b"2"}


MALFORMED = [
    (b'{"key": "c", "value": [1, 2}', "line 3: JSON is malformed"),
    (b'{"key": "c"}', 'line 3 (key \'c\'): expected exactly one of "value" and "value_base64"'),
    (b'{"key": "c", "value": 1, "value_base64": "MQ=="}', "expected exactly one of"),
    (b'{"key": "", "value": 1}', "line 3: the key is empty"),
    (b'{"key": "c", "value": 1, "ttl": -1}', "ttl must be a positive number"),
    (b'{"key": "c", "value": 1, "ttl": "soon"}', "line 3: Expected `float | null`"),
    (b'{"key": "c", "value_base64": "@@"}', "value_base64 is not base64"),
    (b'["c", 1]', "line 3: Expected `object`"),
]


@pytest.mark.parametrize(("bad", "message"), MALFORMED)
def test_a_malformed_import_line_is_named_and_nothing_is_written(
    bad: bytes, message: str, backends: Backends, cli: Any, tmp_path: Path
) -> None:
    url = backends.url("sqlite")
    file = tmp_path / "in.jsonl"
    file.write_bytes(b'{"key":"a","value":1,"ttl":null}\n\n' + bad + b'\n{"key":"d","value":4}\n')
    run = cli("import", url, str(file))
    assert run.code == 1
    assert message in one_line_error(run)
    assert dump(url) == {}  # line 1 was valid, yet nothing was written


def test_no_validate_streams_and_says_what_was_written(
    backends: Backends, cli: Any, tmp_path: Path
) -> None:
    url = backends.url("sqlite")
    file = tmp_path / "in.jsonl"
    good = b"".join(b'{"key":"k%d","value":%d}\n' % (i, i) for i in range(5))
    file.write_bytes(good + b"not json\n")
    run = cli("import", url, str(file), "--no-validate", "--batch-size", "2")
    assert run.code == 1
    line = one_line_error(run)
    assert "line 6" in line and "4 record(s) before it were already written" in line
    assert len(dump(url)) == 4  # two full batches; the fifth record's batch never ran


def test_import_from_stdin_validates_before_writing(backends: Backends) -> None:
    url = backends.url("sqlite")
    run = run_process("import", url, stdin=b'{"key":"a","value":1}\n{"key":\n')
    assert run.code == 1
    assert "<stdin>, line 2" in one_line_error(run)
    assert dump(url) == {}


def test_failed_export_to_a_file_leaves_no_file(tmp_path: Path, cli: Any) -> None:
    out = tmp_path / "backup.jsonl"
    run = cli("export", f"redis://127.0.0.1:{free_port()}/0", "-o", str(out))
    assert run.code == 1
    assert "Redis is unavailable" in one_line_error(run)
    assert list(tmp_path.iterdir()) == []


def test_export_interrupted_mid_way_leaves_no_partial_file(
    backends: Backends, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = backends.url("sqlite")
    fill(url, {f"k{i}": b"1" for i in range(50)})
    real = raw_module.Reader.read
    calls = 0

    async def failing_read(self: Any, keys: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(28, "No space left on device")
        return await real(self, keys)

    monkeypatch.setattr(raw_module.Reader, "read", failing_read)
    run = cli("export", url, "-o", str(tmp_path / "out.jsonl"), "--batch-size", "10")
    assert run.code == 1
    assert "No space left on device" in one_line_error(run)
    assert [
        p.name for p in tmp_path.iterdir() if not p.name.endswith((".db", "-wal", "-shm"))
    ] == []


# ------------------------------------------------------------------------------- read-only opening

# Commands that only read (and the read side of copy, and a dry run's destination) open SQLite
# read-only: a mistyped path is an error, never a new empty database that looks like an empty bot.
READ_ONLY_COMMANDS = [
    ["ls", "{missing}"],
    ["ls", "{missing}", "--json"],
    ["get", "{missing}", "k"],
    ["ttl", "{missing}", "k"],
    ["stats", "{missing}"],
    ["stats", "{missing}", "--json"],
    ["export", "{missing}"],
    ["export", "{missing}", "-o", "{out}"],
    ["copy", "{missing}", "{other}"],
    ["copy", "{existing}", "{missing}", "--dry-run"],
    ["import", "{missing}", "{file}", "--dry-run"],
]


@pytest.mark.parametrize("argv", READ_ONLY_COMMANDS, ids=" ".join)
def test_commands_that_only_read_never_create_a_sqlite_file(
    argv: list[str], tmp_path: Path, cli: Any
) -> None:
    existing = f"sqlite:///{tmp_path / 'bot.db'}"
    fill(existing, {"k": b"1"})
    (tmp_path / "in.jsonl").write_bytes(b'{"key":"k","value":2}\n')
    before = _files(tmp_path)
    names = {
        "missing": f"sqlite:///{tmp_path / 'missing.db'}",
        "other": f"sqlite:///{tmp_path / 'other.db'}",
        "existing": existing,
        "out": str(tmp_path / "out.jsonl"),
        "file": str(tmp_path / "in.jsonl"),
    }
    run = cli(*(arg.format(**names) for arg in argv))
    assert run.code == 1, run
    assert "missing.db" in one_line_error(run)
    assert run.out == b""
    assert _files(tmp_path) == before  # nothing created, nothing changed


def _files(directory: Path) -> dict[str, bytes]:
    """The files of ``directory`` and their bytes, leaving out SQLite's ``-wal``/``-shm``.

    A read-only connection to a WAL database creates those two beside it when absent, and
    cannot remove them on close (that takes a checkpoint, which is a write): SQLite's
    behaviour, not a new database.
    """
    return {
        p.name: p.read_bytes()
        for p in sorted(directory.iterdir())
        if not p.name.endswith(("-wal", "-shm"))
    }


def test_a_dry_run_into_an_existing_sqlite_file_leaves_it_untouched(
    tmp_path: Path, cli: Any
) -> None:
    src, dst = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    fill(src, {"a": b"1", "b": b"2"})
    fill(dst, {"a": b"100"})
    files = _files(tmp_path)
    dry = cli("copy", src, dst, "--dry-run", "--json")
    assert dry.code == 0, dry
    assert (dry.json["written"], dry.json["replaced_existing"]) == (2, 1)
    assert _files(tmp_path) == files
    assert {k: v for k, (v, _) in dump(dst).items()} == {"a": b"100"}
    assert cli("ls", src, "--json").code == 0  # reading an existing file works read-only


# ------------------------------------------------------------------------------- copy

PAIRS = [(s, d) for s in KINDS for d in KINDS]
# Cloudflare KV keeps expirations as whole seconds since the epoch, truncated on the way in and
# on the way out: each pass through it (a write, a read) can take up to a second off a TTL, by
# design of KV. Every other backend is held to one second overall.
SLACK = {kind: 2.0 if kind == "cloudflare" else 0.0 for kind in KINDS}
# 10,000 keys for every pair; 2,000 where Cloudflare KV's emulator is an end (each timed key is
# one HTTP write when seeded, and nine such pairs dominated the suite's time).
KEYS_PER_PAIR = {kind: 2_000 if kind == "cloudflare" else 10_000 for kind in KINDS}


@pytest.mark.parametrize(("src_kind", "dst_kind"), PAIRS, ids=[f"{s}-to-{d}" for s, d in PAIRS])
def test_copy_10000_keys_with_ttls(
    src_kind: str, dst_kind: str, backends: Backends, cli: Any
) -> None:
    src, dst = backends.url(src_kind), backends.url(dst_kind)
    n = min(KEYS_PER_PAIR[src_kind], KEYS_PER_PAIR[dst_kind])
    expected = asyncio.run(seed(src, n))
    run = cli("copy", src, dst, "--json")
    assert run.code == 0, run
    summary = run.json
    assert summary["written"] == len(expected) and summary["expired"] == 0
    slack = 1.0 + SLACK[src_kind] + SLACK[dst_kind]
    assert_same(dump(dst), expected, slack=slack)
    assert_same(dump(src), expected, slack=slack)  # the source is untouched


def test_copy_with_prefix_dry_run_and_no_overwrite(backends: Backends, cli: Any) -> None:
    src, dst = backends.url("sqlite"), backends.url("redis")
    fill(src, {"a:1": b"1", "a:2": b"2", "b:1": b"3"})
    fill(dst, {"a:1": b"100"})

    dry = cli("copy", src, dst, "--prefix", "a:", "--dry-run", "--json")
    assert dry.code == 0
    assert (dry.json["written"], dry.json["replaced_existing"]) == (2, 1)
    assert {k: v for k, (v, _) in dump(dst).items()} == {"a:1": b"100"}  # nothing written

    keep = cli("copy", src, dst, "--prefix", "a:", "--no-overwrite", "--json")
    assert (keep.json["written"], keep.json["skipped_existing"]) == (1, 1)
    assert {k: v for k, (v, _) in dump(dst).items()} == {"a:1": b"100", "a:2": b"2"}

    assert cli("copy", src, dst, "--prefix", "a:").code == 0  # --overwrite is the default
    assert {k: v for k, (v, _) in dump(dst).items()} == {"a:1": b"1", "a:2": b"2"}


def test_copy_no_overwrite_into_sqlite_uses_the_generic_path(backends: Backends, cli: Any) -> None:
    src, dst = backends.url("redis"), backends.url("sqlite")
    fill(src, {"a": b"1", "b": b"2"}, ttl=300)
    fill(dst, {"a": b"100"})
    run = cli("copy", src, dst, "--no-overwrite", "--json")
    assert (run.json["written"], run.json["skipped_existing"]) == (1, 1)
    snap = dump(dst)
    assert snap["a"] == (b"100", None)
    assert snap["b"][0] == b"2" and snap["b"][1] is not None


def test_copy_skips_keys_that_expire_in_transit(
    backends: Backends, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = backends.url("sqlite"), backends.url("redis")
    fill(src, {"short": b"1"}, ttl=300)
    fill(src, {"long": b"2"}, ttl=3000)
    real = raw_module.Writer.write

    async def slow_write(self: Any, entries: Any) -> None:
        # The copy takes 1,000 s between read and write (no real waiting: the entries age by
        # that much): the short key dies on the way, the long one arrives with ~2,000 s left.
        aged = [raw_module.Entry(e.key, e.data, e.deadline - 1000) for e in entries]
        await real(self, aged)

    monkeypatch.setattr(raw_module.Writer, "write", slow_write)
    run = cli("copy", src, dst, "--json")
    assert (run.json["written"], run.json["expired"]) == (1, 1)
    copied = dump(dst)
    assert copied.keys() == {"long"}
    assert 1990 < copied["long"][1] - time.monotonic() <= 2000


def test_copy_interrupted_by_a_failure_resumes_on_rerun(
    backends: Backends, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = backends.url("redis"), backends.url("sqlite")
    expected = asyncio.run(seed(src, 2_000))
    real = raw_module.Writer.write
    calls = 0

    async def failing_write(self: Any, entries: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            from gramio_storage import BackendUnavailableError

            raise BackendUnavailableError("injected: the destination went away")
        await real(self, entries)

    monkeypatch.setattr(raw_module.Writer, "write", failing_write)
    run = cli("copy", src, dst, "--batch-size", "300")
    assert run.code == 1
    assert "injected" in one_line_error(run)
    partial = dump(dst)
    assert 0 < len(partial) == 600 < len(expected)
    monkeypatch.setattr(raw_module.Writer, "write", real)

    again = cli("copy", src, dst, "--json")
    assert again.code == 0
    assert_same(dump(dst), expected)


def test_copy_killed_mid_way_completes_on_rerun(backends: Backends, cli_redis: RedisServer) -> None:
    src, dst = backends.url("sqlite"), backends.url("redis")
    expected = asyncio.run(seed(src, 30_000, seed=7))
    import redis

    db = int(dst.rpartition("/")[2])
    client = redis.Redis(host="127.0.0.1", port=cli_redis.port, db=db)
    argv = [sys.executable, "-m", "gramio_storage.cli", "copy", src, dst, "--batch-size", "50"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def first_batches_landed() -> bool:
        assert process.poll() is None, process.stderr and process.stderr.read()
        return bool(client.dbsize())

    try:
        eventually_sync(first_batches_landed, 60, interval=0.002)
        process.send_signal(signal.SIGKILL)  # ...then kill it, as a crash would
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
    copied = client.dbsize()
    client.close()
    assert process.returncode == -signal.SIGKILL
    assert 0 < copied < len(expected), "the copy was not interrupted mid-way"

    rerun = run_process("copy", src, dst, "--json")
    assert rerun.code == 0, rerun
    assert rerun.json["written"] == len(expected)
    assert_same(dump(dst), expected)  # nothing lost, nothing extra


def test_redis_keys_of_other_types_are_left_alone(
    backends: Backends, cli: Any, cli_redis: RedisServer
) -> None:
    import redis

    src, dst = backends.url("redis"), backends.url("sqlite")
    fill(src, {"session:1": b'{"a":1}'}, ttl=300)
    db = int(src.rpartition("/")[2])
    with redis.Redis(host="127.0.0.1", port=cli_redis.port, db=db) as client:
        client.hset("session:other-app", mapping={"x": "1"})  # someone else's hash
    listing = cli("ls", src, "--json")
    assert [e["key"] for e in listing.json] == ["session:1"]
    run = cli("copy", src, dst, "--json")
    assert run.code == 0 and run.json["written"] == 1
    assert dump(dst).keys() == {"session:1"}


def test_copy_to_and_from_a_redis_cluster(
    backends: Backends,
    cli: Any,
    redis_cluster_session: RedisCluster,  # noqa: F811 (the imported fixture)
) -> None:
    # Keys spread over every hash slot: the CLI pipelines per key instead of the script.
    flush(redis_cluster_session)  # the session's shared cluster: start (and end) empty
    cluster = f"{redis_cluster_session.url}?cluster=true"
    src, back = backends.url("sqlite"), backends.url("sqlite")
    expected = asyncio.run(seed(src, 1_000))
    try:
        assert cli("copy", src, cluster).code == 0
        assert len(cli("ls", cluster, "--json", "--limit", "0").json) == len(expected)
        again = cli("copy", src, cluster, "--no-overwrite", "--json")
        assert (again.json["written"], again.json["skipped_existing"]) == (0, len(expected))
        assert cli("copy", cluster, back).code == 0
        assert_same(dump(back), expected)
    finally:
        flush(redis_cluster_session)


def test_copy_refuses_the_same_url(backends: Backends, cli: Any) -> None:
    url = backends.url("sqlite")
    assert cli("copy", url, url).code == 2


def test_progress_bar_only_when_stderr_is_a_terminal(backends: Backends) -> None:
    src, dst = backends.url("sqlite"), backends.url("sqlite")
    fill(src, {f"k{i}": b"1" for i in range(2000)})
    plain = run_process("copy", src, dst, "--batch-size", "100")
    assert plain.code == 0
    assert "copying" not in plain.err and "\x1b[" not in plain.err
    assert plain.err.startswith("copied 2000 key(s)")

    master, slave = pty.openpty()
    argv = [sys.executable, "-m", "gramio_storage.cli", "copy", src, dst, "--batch-size", "100"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    output = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
        process.wait(timeout=30)
    assert process.returncode == 0
    assert b"copying" in output and b"\x1b[" in output  # a drawn (ANSI) progress bar
    assert b"copied 2000 key(s)" in output


# ------------------------------------------------------------------------------- bad input


def test_unknown_scheme_is_a_usage_error(cli: Any) -> None:
    run = cli("ls", "mongodb://localhost/x")
    assert run.code == 2
    line = one_line_error(run)
    assert "No storage adapter for scheme 'mongodb'" in line and "sqlite" in line


@pytest.mark.parametrize(
    ("module", "url", "extra"),
    [("redis", "redis://127.0.0.1:1/0", "redis"), ("asyncpg", "postgresql://h/db", "postgres")],
)
def test_missing_extra_names_the_pip_command(module: str, url: str, extra: str) -> None:
    run = run_blocked(module, "ls", url)
    assert run.code == 1
    assert f"pip install 'gramio-storage[{extra}]'" in one_line_error(run)


def test_missing_rich_only_matters_for_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    fill(url, {"k": b"1"})
    for command in ("ls", "stats"):
        table = run_blocked("rich", command, url)
        assert table.code == 1
        assert "pip install 'gramio-storage[cli]'" in one_line_error(table)
        assert table.out == b"", command  # stdout only ever carries data: nothing half drawn
    assert json.loads(run_blocked("rich", "stats", url, "--json").out)["keys"] == 1
    listing = run_blocked("rich", "ls", url, "--json")
    assert (listing.code, json.loads(listing.out)) == (0, [{"key": "k", "ttl": None, "size": 1}])
    assert run_blocked("rich", "get", url, "k").out == b"1\n"


@pytest.mark.parametrize(
    "url",
    [
        "redis://:Sup3r-Secret@127.0.0.1:{port}/0",
        "postgresql://postgres:Sup3r-Secret@127.0.0.1:{port}/db?connect_timeout=2",
    ],
)
def test_unreachable_server_is_one_line_without_the_password(url: str, cli: Any) -> None:
    url = url.format(port=free_port())
    for args in (["ls", url], ["get", url, "k"], ["copy", url, "sqlite:///:memory:"]):
        run = cli(*args)
        assert run.code == 1, run
        line = one_line_error(run)
        assert "unavailable" in line.lower() or "connect failed" in line.lower(), line
        assert "Sup3r-Secret" not in run.err and "Sup3r-Secret" not in run.out.decode()
    debug = cli("--debug", "ls", url)
    assert debug.code == 1 and "Traceback" in debug.err
    assert "Sup3r-Secret" not in debug.err


def test_credentials_come_from_the_environment_and_are_never_printed(
    tmp_path: Path,
) -> None:
    with RedisServer(config={"requirepass": "Env-Secret-42"}) as server:
        url = f"redis://:${{REDIS_PASSWORD}}@127.0.0.1:{server.port}/0"
        env = {"REDIS_PASSWORD": "Env-Secret-42"}
        assert run_process("set", url, "k", "1", env=env).code == 0
        assert run_process("get", url, "k", env=env).out == b"1\n"

        wrong = run_process("ls", url, env={"REDIS_PASSWORD": "Wrong-Secret-1"})
        assert wrong.code == 1 and "Wrong-Secret-1" not in wrong.err

        missing = run_process("ls", url, unset=["REDIS_PASSWORD"])
        assert missing.code == 2
        assert "${REDIS_PASSWORD}" in one_line_error(missing)

        envfile = tmp_path / ".env"
        envfile.write_text("# bot settings\nexport REDIS_PASSWORD='Env-Secret-42'\n")
        copied = run_process(
            "--env-file", str(envfile), "copy", url, f"sqlite:///{tmp_path / 'x.db'}"
        )
        assert copied.code == 0, copied
        assert "Env-Secret-42" not in copied.err and "redis://:***@127.0.0.1" in copied.err
        debug = run_process("--debug", "--env-file", str(envfile), "ttl", url, "missing")
        assert debug.code == 3 and "Env-Secret-42" not in debug.err


def test_broken_pipe_exits_quietly(backends: Backends) -> None:
    url = backends.url("sqlite")
    fill(url, {f"k{i:05}": b"x" * 100 for i in range(20_000)})
    argv = [sys.executable, "-m", "gramio_storage.cli", "export", url]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # the reader goes away, as `| head -1` does
    err = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=30) == 141
    assert json.loads(first)["key"] == "k00000"
    assert "Traceback" not in err and "error" not in err


def test_encode_and_parse_line_are_inverse() -> None:
    from gramio_storage.cli._transfer import encode_line, parse_line

    for data in [*ODD_VALUES.values(), BINARY_VALUE, b"{}", b"[]", b'"\xff"', b"\x00\x01", b"1\r2"]:
        for ttl in (None, 12.5):
            line = encode_line("k ✓", data, ttl)
            assert line.endswith(b"\n") and line.count(b"\n") == 1
            assert parse_line(line, 1, "x") == ("k ✓", data, ttl)
    assert msgspec.json.decode(encode_line("k", b'{"a":1}', None)) == {
        "key": "k",
        "value": {"a": 1},
        "ttl": None,
    }


# ------------------------------------------------------------------------ the public API only


def test_secrets_are_masked_by_the_core_redactor() -> None:
    """The CLI masks with the library's one redactor: a password with / ? # @ never leaks."""
    from gramio_storage import _redact
    from gramio_storage.cli import _secrets

    assert _secrets.mask_url is _redact.mask_url
    secrets = _secrets.Secrets({"REDIS_PASSWORD": "p/w?x#y@z"})
    url = secrets.expand("redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0")
    assert url == "redis://:p/w?x#y@z@127.0.0.1:6379/0"
    assert _secrets.mask_url(url) == "redis://:***@127.0.0.1:6379/0"
    assert secrets.scrub(f"cannot connect to {url}: refused") == (
        "cannot connect to redis://:***@127.0.0.1:6379/0: refused"
    )
    tokens = _secrets.Secrets({"CLOUDFLARE_API_TOKEN": "cf-token-123", "HOME": "/root"})
    assert tokens.scrub("auth cf-token-123 failed in /root") == "auth *** failed in /root"


class _CountingBackend(MemoryBackend):
    """A memory backend recording the bulk calls the CLI makes (behaviour unchanged)."""

    def __init__(self, caps: Capabilities | None = None) -> None:
        super().__init__()
        if caps is not None:
            self.capabilities = caps  # type: ignore[misc]
        self.calls: list[tuple[str, int]] = []

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        self.calls.append(("get_many", len(keys)))
        return await super().get_many(keys)

    async def get_entries(self, keys: Sequence[str]) -> list[tuple[bytes | None, float | None]]:
        self.calls.append(("get_entries", len(keys)))
        return await super().get_entries(keys)

    async def set_entries(
        self, entries: Sequence[tuple[str, bytes, float | None]], *, overwrite: bool = True
    ) -> list[bool]:
        self.calls.append(("set_entries" if overwrite else "set_entries_nx", len(entries)))
        return await super().set_entries(entries, overwrite=overwrite)


async def _copy(src: BaseStorage, dst: BaseStorage, **options: Any) -> raw_module.WriteStats:
    reader = raw_module.Reader(src)
    writer = raw_module.Writer(dst, **options)
    async for batch in raw_module.batched_keys(src, "", 500, reader):
        await writer.write(await reader.read(batch))
    return writer.stats


async def test_the_cli_moves_data_through_get_entries_and_set_entries() -> None:
    """One get_entries and one set_entries per batch, on any backend; prefixes respected."""
    source = _CountingBackend()
    dest = _CountingBackend()
    src = BaseStorage(source).with_prefix("app:")
    dst = BaseStorage(dest).with_prefix("copy:")
    await BaseStorage(source).set("other", 0)  # outside the view: never read
    for i in range(1200):
        await src.set(f"k{i:04}", i, ttl=600 if i % 2 else None)
    source.calls.clear()
    stats = await _copy(src, dst)
    assert (stats.written, stats.expired) == (1200, 0)
    reads = [call for call in source.calls if call[0] == "get_entries"]  # (its default: get_many)
    assert reads == [("get_entries", 500), ("get_entries", 500), ("get_entries", 200)]
    assert dest.calls == [("set_entries", 500), ("set_entries", 500), ("set_entries", 200)]
    assert await dst.get("k0001") == 1
    ttl = await dst.ttl("k0001")
    assert ttl is not None and 599 <= ttl <= 600
    assert await dst.ttl("k0002") is None
    assert [k async for k in BaseStorage(dest).keys()][:1] == ["copy:k0000"]

    dest.calls.clear()
    again = await _copy(src, dst, overwrite=False)
    assert (again.written, again.skipped) == (0, 1200)
    assert {name for name, _ in dest.calls} == {"set_entries_nx"}


async def test_a_listing_with_expiries_needs_no_ttl_reads() -> None:
    """lists_ttls: the keys' expiries come from scan_ttl; a batch is one get_many."""
    source = _CountingBackend(Capabilities(name="listing", lists_ttls=True))
    src = BaseStorage(source)
    await src.set_many({f"k{i}": i for i in range(10)}, ttl=300)
    source.calls.clear()
    stats = await _copy(src, BaseStorage(MemoryBackend()))
    assert stats.written == 10
    assert source.calls == [("get_many", 10)]


async def test_the_destination_capabilities_are_checked_before_any_write() -> None:
    """The CLI calls backends directly, so it checks keys and TTLs as the facade would."""
    src = BaseStorage(MemoryBackend())
    await src.set("short", 1)
    await src.set("a-much-longer-key", 2)
    dest = _CountingBackend(Capabilities(name="tiny", max_key_bytes=8, min_ttl=60))
    with pytest.raises(InvalidKeyError, match="tiny"):
        await _copy(src, BaseStorage(dest))
    assert dest.calls == []  # nothing written

    await src.delete("a-much-longer-key")
    await src.set("brief", 3, ttl=5)
    stats = await _copy(src, BaseStorage(dest))
    assert (stats.written, stats.ttl_raised) == (2, 1)
    ttl = await BaseStorage(dest).ttl("brief")
    assert ttl is not None and 59 < ttl <= 60


class _NoAtomicsBackend(_CountingBackend):
    """Like Cloudflare KV: no add, incr or update (atomic_ops=False)."""

    async def add(self, key: str, data: bytes, ttl: float | None) -> bool:
        raise UnsupportedOperationError("no add here")


async def test_no_overwrite_into_a_backend_without_atomic_operations() -> None:
    """--no-overwrite cannot use add() there: existing keys are checked just before writing."""
    src = BaseStorage(MemoryBackend())
    await src.set_many({"a": 1, "b": 2})
    dest = _NoAtomicsBackend(Capabilities(name="kv", atomic_ops=False))
    dst = BaseStorage(dest)
    await dst.set("a", 100)
    stats = await _copy(src, dst, overwrite=False)
    assert (stats.written, stats.skipped) == (1, 1)
    assert await dst.get_many(["a", "b"]) == {"a": 100, "b": 2}
