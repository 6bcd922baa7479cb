"""A real local Cloudflare KV for tests: Miniflare (workerd) behind the Cloudflare REST paths.

Import the session fixture in a test module::

    from _cloudflare_server import KVEmulator, cloudflare_kv  # noqa: F401 (fixture)

    async def test_something(cloudflare_kv: KVEmulator) -> None:
        storage = cloudflare_kv.storage(namespace=3)

``cloudflare_kv`` starts ``tests/cloudflare/server.mjs`` once per session on 127.0.0.1 (a free
port, no network: Miniflare's ``cf.json`` download is disabled), with ``NAMESPACES`` empty KV
namespaces, and stops it at the end. The Node project is installed by ``npm ci`` (``make test``
runs it through ``scripts/system-deps.sh``); a missing Node or Miniflare fails the tests with
the command to run, it never skips them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import selectors
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["NAMESPACES", "KVEmulator", "cloudflare_kv", "start_emulator"]

PROJECT = Path(__file__).parent / "cloudflare"
NAMESPACES = 8
START_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class KVEmulator:
    """Where the emulator listens and the credentials it accepts.

    Attributes:
        base_url: The API root to pass as ``base_url=`` (``http://127.0.0.1:<port>/client/v4``).
        account_id: The only account id the emulator accepts.
        namespace_ids: Ids of its KV namespaces; each is a separate, initially empty store.
        api_token: The bearer token it accepts (any other answers 403).
        process: The Node process.
    """

    base_url: str
    account_id: str
    namespace_ids: tuple[str, ...]
    api_token: str
    process: subprocess.Popen[bytes] = dataclasses.field(repr=False, compare=False)

    def namespace_url(self, namespace: int = 0) -> str:
        """The REST URL of one namespace, for raw HTTP requests."""
        return (
            f"{self.base_url}/accounts/{self.account_id}/storage/kv/namespaces/"
            f"{self.namespace_ids[namespace]}"
        )

    def storage(self, namespace: int = 0, **options: Any) -> Any:
        """A ``CloudflareKVStorage`` on namespace number ``namespace`` (0..NAMESPACES-1)."""
        from gramio_storage.cloudflare import CloudflareKVStorage

        return CloudflareKVStorage(
            self.account_id,
            self.namespace_ids[namespace],
            api_token=self.api_token,
            base_url=self.base_url,
            **options,
        )


def start_emulator(workdir: Path, namespaces: int = NAMESPACES) -> KVEmulator:
    """Start the emulator, its log in ``workdir``; stop it with :func:`stop_emulator`."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "Node.js (>= 18) is needed for the Cloudflare KV emulator and is not on PATH; "
            "install it (apt-get install nodejs npm), then run `npm ci` in tests/cloudflare",
            pytrace=False,
        )
    if not (PROJECT / "node_modules" / "miniflare").is_dir():
        pytest.fail(
            "Miniflare is not installed: run `npm ci` in tests/cloudflare "
            "(`make test` does it through scripts/system-deps.sh)",
            pytrace=False,
        )
    account = secrets.token_hex(16)
    ids = tuple(secrets.token_hex(16) for _ in range(namespaces))
    token = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "KV_EMULATOR_ACCOUNT": account,
        "KV_EMULATOR_NAMESPACES": ",".join(ids),
        "KV_EMULATOR_TOKEN": token,
        "KV_EMULATOR_PORT": "0",
        # Belt and braces with `cf: false` in server.mjs: never fetch cf.json from the internet.
        "CLOUDFLARE_CF_FETCH_ENABLED": "false",
    }
    log = (workdir / "emulator.log").open("wb")
    process = subprocess.Popen(
        [node, str(PROJECT / "server.mjs")],
        cwd=workdir,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    log.close()
    assert process.stdout is not None
    line = b""
    deadline = time.monotonic() + START_TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                break  # timed out
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break  # the process exited
            line += chunk
    try:
        url = json.loads(line)["url"]
    except (ValueError, KeyError):
        _stop(process)
        tail = (workdir / "emulator.log").read_text(errors="replace")[-3000:]
        pytest.fail(f"The Cloudflare KV emulator did not start. Its log:\n{tail}", pytrace=False)
    return KVEmulator(f"{url}/client/v4", account, ids, token, process)


def stop_emulator(emulator: KVEmulator) -> None:
    """Stop the emulator: close its stdin (it disposes of workerd), then terminate if needed."""
    _stop(emulator.process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture(scope="session")
def cloudflare_kv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KVEmulator]:
    """The session's Cloudflare KV emulator (see the module docstring)."""
    emulator = start_emulator(tmp_path_factory.mktemp("cloudflare-kv"))
    try:
        yield emulator
    finally:
        stop_emulator(emulator)
