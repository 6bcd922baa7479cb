"""Real redis-server processes for tests and benchmarks: a single server and a 3-master cluster.

Everything runs on free loopback ports with a temporary working directory, and is stopped at the
end. A missing ``redis-server`` binary is an error (install Debian's ``redis-server`` package,
which ``make test`` does through ``scripts/system-deps.sh``), never a skip.

Pytest fixtures (session scoped, shared by every test module that imports them)::

    from _redis_server import *  # noqa: F403  (the fixtures: pytest looks in the globals)

    async def test_something(redis_url: str) -> None: ...

* ``redis_server`` / ``redis_url``: one server, ``redis://127.0.0.1:<port>/0``.
* ``redis_cluster`` / ``redis_cluster_url``: three masters (no replicas), all 16384 slots
  covered; the URL names one node, cluster clients discover the others.

The servers are shared by the whole session: scope your keys with a unique prefix, or call
:func:`flush` first if your test needs an empty database. Tests that stop or restart a server
start their own with :func:`redis_server` (a context manager) instead of touching the shared one.

Plain helpers for scripts (``bench/``) and tests: :func:`redis_server`, :func:`redis_cluster`,
:class:`RedisServer` (``start``/``stop``/``kill``/``restart``), :func:`flush`.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = [
    "RedisCluster",
    "RedisServer",
    "find_binary",
    "flush",
    "free_port",
    "redis_cluster",
    "redis_cluster_session",
    "redis_cluster_url",
    "redis_server",
    "redis_server_session",
    "redis_url",
]

HOST = "127.0.0.1"
START_TIMEOUT = 15.0
_INSTALL_HINT = (
    "is required by the Redis tests and benchmarks. Install Debian's redis-server package "
    "(`apt-get install redis-server`, which also provides redis-cli), or run `make test`, "
    "which installs it through scripts/system-deps.sh."
)


def find_binary(name: str) -> str:
    """Return the path of ``redis-server`` or ``redis-cli``, failing loudly when missing."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"`{name}` was not found on PATH: it {_INSTALL_HINT}")
    return path


def free_port(*, cluster: bool = False) -> int:
    """A loopback port that is free right now (and ``port + 10000`` too, for a cluster bus)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if not cluster:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("could not find a free loopback port")


def _command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one inline command to a server and return its raw reply (test plumbing only)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall((" ".join(args) + "\r\n").encode())
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
        if reply.startswith(b"$"):  # a bulk string: read the announced length
            size = int(reply[1 : reply.index(b"\r\n")])
            header = reply.index(b"\r\n") + 2
            while size >= 0 and len(reply) < header + size + 2:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        return reply


class RedisServer:
    """One redis-server process on a loopback port, with its own working directory.

    Args:
        directory: Working directory (RDB/AOF files, log). A temporary one is made if ``None``.
        port: The port; a free one is chosen if ``None``. Kept across restarts.
        appendonly: Turn on the append-only file with ``appendfsync always`` (every
            acknowledged write is on disk before the reply).
        cluster: Start in cluster mode (``--cluster-enabled yes``).
        unix_socket: Also listen on ``<directory>/redis.sock`` (see :attr:`unix_path`).
        config: Extra ``redis-server`` options, such as ``{"requirepass": "secret"}``.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        port: int | None = None,
        appendonly: bool = False,
        cluster: bool = False,
        unix_socket: bool = False,
        config: dict[str, str] | None = None,
    ) -> None:
        self.binary = find_binary("redis-server")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="gramio-redis-")
            directory = Path(self._tmp.name)
        self.directory = directory
        self.port = port if port is not None else free_port(cluster=cluster)
        self.appendonly = appendonly
        self.cluster = cluster
        self.unix_socket = unix_socket
        self.config = dict(config or {})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def unix_path(self) -> Path:
        """The Unix socket's path (only listened on when ``unix_socket=True``)."""
        return self.directory / "redis.sock"

    @property
    def log(self) -> str:
        """The server's log so far (for failure messages)."""
        try:
            return (self.directory / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def _argv(self) -> list[str]:
        options = {
            "port": str(self.port),
            "bind": HOST,
            "dir": str(self.directory),
            "logfile": "redis.log",
            "daemonize": "no",
            "save": "",  # no RDB snapshots: persistence is the AOF's job when a test wants it
            "appendonly": "yes" if self.appendonly else "no",
            "appendfsync": "always",
            "databases": "16",
        }
        if self.unix_socket:
            options |= {"unixsocket": str(self.unix_path), "unixsocketperm": "700"}
        if self.cluster:
            options |= {
                "cluster-enabled": "yes",
                "cluster-config-file": "nodes.conf",
                "cluster-node-timeout": "5000",
            }
        options |= self.config
        argv = [self.binary]
        for name, value in options.items():
            argv += [f"--{name}", value]
        return argv

    def start(self) -> None:
        """Start the process and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return
        self.process = subprocess.Popen(
            self._argv(),
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with {self.process.returncode}:\n"
                    f"{err}\n{self.log[-4000:]}"
                )
            with contextlib.suppress(OSError):
                reply = _command(self.port, "PING", timeout=0.5)
                if reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH"):
                    return
                if reply.startswith(b"-LOADING"):
                    pass  # still reading its AOF: keep waiting
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer within "
                    f"{START_TIMEOUT:g}s:\n{self.log[-4000:]}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Shut down gracefully (SIGTERM: the AOF is flushed) and wait for the exit."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill abruptly (SIGKILL), as a crash or power loss would, and wait for the exit."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) the server and start it again on the same port and directory."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def close(self) -> None:
        """Stop the server and remove its temporary directory (if this object made it)."""
        self.kill()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RedisCluster:
    """A Redis Cluster of ``masters`` redis-server processes without replicas.

    Created with ``redis-cli --cluster create ... --cluster-yes``; :meth:`start` returns once
    every node reports ``cluster_state:ok`` and knows every other node. A node stopped with
    ``nodes[i].kill()`` and started again keeps its slots (its ``nodes.conf`` stays), and with
    ``appendonly=True`` its data too.
    """

    def __init__(self, masters: int = 3, *, appendonly: bool = False) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.cli = find_binary("redis-cli")
        self._tmp = tempfile.TemporaryDirectory(prefix="gramio-redis-cluster-")
        root = Path(self._tmp.name)
        self.nodes: list[RedisServer] = []
        ports: set[int] = set()
        for i in range(masters):
            directory = root / f"node{i}"
            directory.mkdir()
            port = free_port(cluster=True)
            while port in ports or port + 10000 in ports:
                port = free_port(cluster=True)
            ports.add(port)
            self.nodes.append(
                RedisServer(directory, port=port, cluster=True, appendonly=appendonly)
            )

    @property
    def url(self) -> str:
        """A URL naming the first node; cluster clients discover the rest."""
        return f"redis://{HOST}:{self.nodes[0].port}"

    @property
    def ports(self) -> list[int]:
        """Ports of all nodes."""
        return [node.port for node in self.nodes]

    def start(self) -> None:
        """Start the nodes, join them into a cluster and wait until it serves every slot."""
        for node in self.nodes:
            node.start()
        done = subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(f"{HOST}:{port}" for port in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                "redis-cli --cluster create failed:\n"
                + done.stdout.decode(errors="replace")
                + done.stderr.decode(errors="replace")
            )
        deadline = time.monotonic() + 30
        while not all(self._ready(port) for port in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "the cluster did not reach cluster_state:ok in 30s:\n"
                    + "\n".join(_command(p, "CLUSTER", "INFO").decode() for p in self.ports)
                )
            time.sleep(0.05)

    def _ready(self, port: int) -> bool:
        info = _command(port, "CLUSTER", "INFO").decode(errors="replace")
        return (
            "cluster_state:ok" in info
            and f"cluster_known_nodes:{len(self.nodes)}" in info
            and "cluster_slots_ok:16384" in info
        )

    def close(self) -> None:
        """Kill every node and remove the working directories."""
        for node in self.nodes:
            node.kill()
        self._tmp.cleanup()

    def __enter__(self) -> RedisCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextlib.contextmanager
def redis_server(
    *,
    appendonly: bool = False,
    unix_socket: bool = False,
    config: dict[str, str] | None = None,
) -> Iterator[RedisServer]:
    """Run a private redis-server for the duration of a ``with`` block (see RedisServer)."""
    with RedisServer(appendonly=appendonly, unix_socket=unix_socket, config=config) as server:
        yield server


@contextlib.contextmanager
def redis_cluster(masters: int = 3, *, appendonly: bool = False) -> Iterator[RedisCluster]:
    """Run a private Redis Cluster of ``masters`` nodes for the duration of a ``with`` block."""
    with RedisCluster(masters, appendonly=appendonly) as cluster:
        yield cluster


def flush(port_or_server: int | RedisServer | RedisCluster) -> None:
    """Empty every database of a server, or of every node of a cluster (test plumbing only)."""
    if isinstance(port_or_server, RedisCluster):
        ports = port_or_server.ports
    elif isinstance(port_or_server, RedisServer):
        ports = [port_or_server.port]
    else:
        ports = [port_or_server]
    for port in ports:
        reply = _command(port, "FLUSHALL")
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"FLUSHALL on port {port} failed: {reply!r}")


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def redis_server_session() -> Iterator[RedisServer]:
    """The session's shared redis-server (see the module docstring); also on a Unix socket."""
    with redis_server(unix_socket=True) as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server_session: RedisServer) -> str:
    """URL of the session's shared redis-server, database 0."""
    return redis_server_session.url


@pytest.fixture(scope="session")
def redis_cluster_session() -> Iterator[RedisCluster]:
    """The session's shared 3-master Redis Cluster."""
    with redis_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster_session: RedisCluster) -> str:
    """URL of one node of the session's shared Redis Cluster."""
    return redis_cluster_session.url
