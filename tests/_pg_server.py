"""A throwaway PostgreSQL server for the tests, from Debian's ``postgresql`` package.

Import the fixtures into a test module (pytest puts ``tests/`` on ``sys.path``)::

    from _pg_server import postgres_dsn  # noqa: F401  (a session-scoped fixture)

    async def test_something(postgres_dsn: str) -> None:
        storage = PostgresStorage(postgres_dsn, table="my_test_table")

``postgres_dsn`` yields ``postgresql://postgres:<password>@127.0.0.1:<port>/postgres``;
``pg_server`` yields the :class:`PostgresServer` itself (``psql()``, ``create_database()``,
``port``...). However many modules import them, one server runs per test process, started on
first use and stopped when the last user finishes. Outside pytest, use the context manager::

    with postgres_server() as server:
        print(server.dsn)

The server is ``initdb``-ed into a fresh temporary directory and started with ``pg_ctl`` on a free
loopback port, listening only on 127.0.0.1 with its unix socket inside that directory. When the
tests run as root it runs as the ``postgres`` OS user (PostgreSQL refuses to run as root).
Password authentication (SCRAM) is on for TCP, so DSNs carry a password, as in production.
``fsync`` is off by default: durability tests kill processes, not the machine, and committed
data survives a killed client or server without it (the kernel still has the pages).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = [
    "PG_PASSWORD",
    "PostgresServer",
    "find_pg_bin",
    "pg_server",
    "postgres_dsn",
    "postgres_server",
]

PG_USER = "postgres"
PG_PASSWORD = "pg-Secr3t-do-not-leak"
"""The superuser's password; tests assert it never shows up in a repr or an error message."""

_INSTALL_HINT = (
    "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin. Install Debian's "
    "`postgresql` package (`bash scripts/system-deps.sh` does it, or `apt-get install "
    "postgresql`), or point GRAMIO_PG_BIN at a directory holding initdb, pg_ctl and psql."
)


def find_pg_bin() -> Path:
    """Return the directory holding ``initdb``/``pg_ctl``/``psql`` (newest version wins).

    ``GRAMIO_PG_BIN`` overrides the search. Raises ``RuntimeError`` with install instructions
    when no PostgreSQL is installed.
    """
    override = os.environ.get("GRAMIO_PG_BIN")
    candidates = [override] if override else glob.glob("/usr/lib/postgresql/*/bin")

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    for path in sorted(candidates, key=version, reverse=True):
        if all((Path(path) / tool).exists() for tool in ("initdb", "pg_ctl", "psql")):
            return Path(path)
    raise RuntimeError(_INSTALL_HINT)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, run by ``pg_ctl``.

    Args:
        fsync: Whether the server fsyncs its WAL (off by default: faster, and process kills
            lose nothing committed either way).
        password: The ``postgres`` superuser's password, required over TCP.
    """

    def __init__(self, *, fsync: bool = False, password: str = PG_PASSWORD) -> None:
        self.bin = find_pg_bin()
        self.password = password
        self.user = PG_USER
        self.host = "127.0.0.1"
        self.port = 0
        self.fsync = fsync
        self.root: Path | None = None
        self._as_postgres = os.geteuid() == 0
        self._running = False

    # ------------------------------------------------------------------ paths and commands

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "server not set up"
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None, "server not set up"
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        assert self.root is not None, "server not set up"
        return self.root / "server.log"

    @property
    def dsn(self) -> str:
        """DSN of the default ``postgres`` database over TCP, with the password."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        """DSN of another database on this server."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        cmd = list(args)
        if self._as_postgres:
            # PostgreSQL refuses to run as root; runuser keeps the environment minimal.
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd="/"
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
                + self._log_tail()
            )
        return proc.stdout

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\nserver log (tail):\n" + "\n".join(lines[-20:])

    # ------------------------------------------------------------------ lifecycle

    def setup(self) -> None:
        """``initdb`` a fresh cluster into a new temporary directory."""
        # Not pytest's tmp_path: its parent is mode 0700 root-only, and the postgres user must
        # be able to reach the data directory.
        self.root = Path(tempfile.mkdtemp(prefix="gramio-pg-"))
        self.socket_dir.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            for path in (self.socket_dir, pwfile):
                shutil.chown(path, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "-E",
            "UTF8",
            "--no-locale",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "--no-sync",
        )
        pwfile.unlink()

    def start(self) -> None:
        """Start the server on a free loopback port (a new one on every try)."""
        if self.root is None:
            self.setup()
        last_error: Exception | None = None
        for _ in range(3):
            port = self.port or _free_port()
            options = " ".join(
                [
                    f"-p {port}",
                    "-c listen_addresses=127.0.0.1",
                    f"-c unix_socket_directories={self.socket_dir}",
                    f"-c fsync={'on' if self.fsync else 'off'}",
                    "-c max_connections=200",
                    "-c shared_buffers=32MB",
                ]
            )
            try:
                self._run(
                    str(self.bin / "pg_ctl"),
                    "start",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    options,
                )
            except RuntimeError as e:  # most likely the port got taken: try another
                last_error = e
                if self.port:  # a restart must keep its port; do not wander off
                    raise
                continue
            self.port = port
            self._running = True
            return
        raise RuntimeError(f"PostgreSQL did not start: {last_error}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean) or ``immediate`` (a crash: recovery on restart)."""
        if self._running:
            self._run(str(self.bin / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", mode, "-w")
            self._running = False

    def restart(self) -> None:
        """Start the stopped server again on the same port."""
        self.start()

    def cleanup(self) -> None:
        """Stop the server if running and delete its directory."""
        try:
            self.stop()
        finally:
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    # ------------------------------------------------------------------ helpers

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL through ``psql`` on the unix socket; return its unaligned output."""
        return self._run(
            str(self.bin / "psql"),
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-XAtc",
            sql,
        ).strip()

    def create_database(self, name: str, options: str = "") -> str:
        """Create a database (``options``: e.g. an ICU locale) and return its DSN."""
        self.psql(f'CREATE DATABASE "{name}" {options}')
        return self.dsn_for(name)


@contextmanager
def postgres_server(**options: bool | str) -> Iterator[PostgresServer]:
    """Start a private PostgreSQL server for the ``with`` block, then stop and delete it."""
    server = PostgresServer(**options)  # type: ignore[arg-type]
    with server:
        yield server


# One shared server per test process, however many modules import the fixtures: pytest makes a
# separate session fixture instance for each importing module, so they share this instead.
_lock = threading.Lock()
_shared: PostgresServer | None = None
_users = 0


def _acquire() -> PostgresServer:
    global _shared, _users
    with _lock:
        if _shared is None:
            try:
                server = PostgresServer()
            except RuntimeError as e:
                pytest.fail(str(e), pytrace=False)
            try:
                server.start()
            except BaseException:
                server.cleanup()
                raise
            _shared = server
        _users += 1
        return _shared


def _release() -> None:
    global _shared, _users
    with _lock:
        _users -= 1
        if _users == 0 and _shared is not None:
            _shared.cleanup()
            _shared = None


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """The shared PostgreSQL server of this test session (started on first use)."""
    server = _acquire()
    try:
        yield server
    finally:
        _release()


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """DSN (with password) of the shared server's ``postgres`` database."""
    server = _acquire()
    try:
        yield server.dsn
    finally:
        _release()
