"""CloudflareKVStorage: REST mode on a real local KV (Miniflare), binding mode on a double.

The emulator (``_cloudflare_server``) runs Cloudflare's own KV implementation behind the REST
paths; error paths it cannot produce on demand (429, 5xx, timeouts) use ``httpx.MockTransport``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from _cloudflare_server import KVEmulator, cloudflare_kv
from _kv_binding_double import KVBindingDouble
from gramio_storage import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    BaseStorage,
    ConfigurationError,
    InvalidKeyError,
    InvalidTTLError,
    MemoryStorage,
    RateLimitedError,
    StorageClosedError,
    StorageError,
    UnsupportedOperationError,
    ValueTooLargeError,
    storage_from_url,
)
from gramio_storage.cloudflare import (
    BindingClient,
    CloudflareKVBackend,
    CloudflareKVStorage,
    RestClient,
    _rest,
    cloudflare_storage,
)
from gramio_storage.testing import StorageTests, make_state_machine

__all__ = ["cloudflare_kv"]  # the session fixture, re-exported for pytest

ACCOUNT = "0123456789abcdef0123456789abcdef"
NAMESPACE = "fedcba9876543210fedcba9876543210"
TOKEN = "sekret-token-1234567890"  # a fake token the tests look for in output

# Namespaces of the session emulator used by this module (others are free for other tests).
NS_KIT, NS_MACHINE, NS_TESTS, NS_SLOW = 0, 1, 2, 3


class Requests:
    """Records the requests a storage sends (httpx event hooks: ``hooks`` holds both)."""

    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []
        self.hooks = {"request": [self.on_request], "response": [self.on_response]}

    async def on_request(self, request: httpx.Request) -> None:
        self.sent.append(request)

    async def on_response(self, response: httpx.Response) -> None:
        response.request.extensions["answered"] = True

    def paths(self) -> list[str]:
        """The answered requests: one the server dropped unanswered (a keep-alive connection
        it closed just then) is retried, and counts once."""
        return [
            f"{r.method} {r.url.raw_path.decode().split('/namespaces/')[1]}"
            for r in self.sent
            if r.extensions.get("answered")
        ]


@pytest.fixture
async def kv(cloudflare_kv: KVEmulator) -> AsyncIterator[tuple[CloudflareKVStorage, Requests]]:
    """An empty REST storage on the emulator whose requests are recorded."""
    requests = Requests()
    client = httpx.AsyncClient(
        headers={"Authorization": f"Bearer {cloudflare_kv.api_token}"},
        event_hooks=requests.hooks,
        timeout=60,  # the emulator writes a 2,000-key bulk request one key at a time
    )
    storage = CloudflareKVStorage(
        cloudflare_kv.account_id,
        cloudflare_kv.namespace_ids[NS_TESTS],
        base_url=cloudflare_kv.base_url,
        client=client,
    )
    await storage.clear()
    requests.sent.clear()
    yield storage, requests
    await storage.close()
    await client.aclose()


# ---------------------------------------------------------------------- conformance: REST


class TestCloudflareKVConformance(StorageTests):
    """The REST backend passes the kit on a real KV (expiry waits: see the slow test)."""

    supports_atomic = False
    min_ttl = 60.0

    @pytest.fixture
    async def storage(self, cloudflare_kv: KVEmulator) -> AsyncIterator[BaseStorage]:
        storage = cloudflare_kv.storage(NS_KIT)
        await storage.clear()
        yield storage
        await storage.close()


_session: dict[str, KVEmulator] = {}


@pytest.fixture(autouse=True, scope="module")
def _emulator_for_machine(cloudflare_kv: KVEmulator) -> Iterator[None]:
    # The hypothesis machine is a unittest-style class that cannot take fixtures; it reads the
    # session emulator from here.
    _session["kv"] = cloudflare_kv
    yield
    _session.clear()


def _machine_storage() -> BaseStorage:
    return _session["kv"].storage(NS_MACHINE)  # type: ignore[no-any-return]


TestCloudflareKVMachine = make_state_machine(
    _machine_storage, supports_atomic=False, min_ttl=60
).TestCase


# ---------------------------------------------------------------------- conformance: binding


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class TestCloudflareKVBindingConformance(StorageTests):
    """Binding mode passes the kit, expiry included (the double's clock moves instantly)."""

    supports_atomic = False
    min_ttl = 60.0
    max_expiry_wait = 61.0  # advance_time below does not wait

    @pytest.fixture
    async def storage(self) -> AsyncIterator[BaseStorage]:
        self.clock = FakeClock()
        storage = CloudflareKVStorage.from_binding(KVBindingDouble(self.clock))
        yield storage
        await storage.close()

    async def advance_time(self, storage: BaseStorage, seconds: float) -> None:
        self.clock.now += seconds + 1  # KV expirations are whole seconds


TestCloudflareKVBindingMachine = make_state_machine(
    lambda: CloudflareKVStorage.from_binding(KVBindingDouble()), supports_atomic=False, min_ttl=60
).TestCase


# ---------------------------------------------------------------------- REST on the emulator


async def test_values_are_plain_json_on_the_rest_path(
    kv: tuple[CloudflareKVStorage, Requests], cloudflare_kv: KVEmulator
) -> None:
    """What the storage writes, a plain HTTP GET reads as JSON text, and the other way round."""
    storage, _ = kv
    base = cloudflare_kv.namespace_url(NS_TESTS)
    auth = {"Authorization": f"Bearer {cloudflare_kv.api_token}"}
    await storage.set("session:1", {"step": "ask_name", "tags": ["é", 1]})
    await storage.set_many({"bulk:1": [1, 2], "bulk:2": "text"})
    async with httpx.AsyncClient(headers=auth) as raw:
        response = await raw.get(f"{base}/values/session%3A1")
        assert response.content == '{"step":"ask_name","tags":["é",1]}'.encode()
        assert (await raw.get(f"{base}/values/bulk%3A1")).content == b"[1,2]"
        assert (await raw.get(f"{base}/values/bulk%3A2")).content == b'"text"'
        # A GramIO Worker writes JSON.stringify(value) under the bare key.
        await raw.put(f"{base}/values/gramio%3A7", content=b'{"from":"gramio","n":7}')
    assert await storage.get("gramio:7") == {"from": "gramio", "n": 7}
    assert await storage.get_many(["gramio:7"]) == {"gramio:7": {"from": "gramio", "n": 7}}


async def test_has_reads_metadata_not_the_value(kv: tuple[CloudflareKVStorage, Requests]) -> None:
    """has() asks the metadata endpoint, so a large value is never downloaded."""
    storage, requests = kv
    await storage.set("big", "x" * 1_000_000)
    requests.sent.clear()
    assert await storage.has("big") is True
    assert await storage.has("missing") is False
    assert requests.paths() == [
        f"GET {storage.namespace_id}/metadata/big",
        f"GET {storage.namespace_id}/metadata/missing",
    ]


async def test_delete_checks_existence_then_deletes(
    kv: tuple[CloudflareKVStorage, Requests],
) -> None:
    """delete() = one metadata read (KV's DELETE does not say) + DELETE; True only if present."""
    storage, requests = kv
    await storage.set("k", 1)
    requests.sent.clear()
    assert await storage.delete("k") is True
    assert [p.split("/", 1)[1] for p in requests.paths()] == ["metadata/k", "values/k"]
    assert await storage.delete("k") is False
    assert await storage.has("k") is False


async def test_ttl_is_sent_as_expiration_ttl(
    kv: tuple[CloudflareKVStorage, Requests], cloudflare_kv: KVEmulator
) -> None:
    """set(ttl=) sends whole seconds as expiration_ttl; KV reports the expiration back."""
    storage, requests = kv
    await storage.set("t", 1, ttl=90.7)
    assert requests.sent[-1].url.params["expiration_ttl"] == "90"
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {cloudflare_kv.api_token}"}
    ) as raw:
        listed = (await raw.get(f"{cloudflare_kv.namespace_url(NS_TESTS)}/keys")).json()
    (item,) = listed["result"]
    assert item["name"] == "t"
    assert abs(item["expiration"] - (time.time() + 90)) <= 2
    left = await storage.ttl("t")
    assert left is not None and 87 <= left <= 90


async def test_ttl_below_60_seconds_is_refused_before_any_request(
    kv: tuple[CloudflareKVStorage, Requests],
) -> None:
    """A TTL under KV's 60 s minimum raises InvalidTTLError naming the limit; nothing is sent."""
    storage, requests = kv
    for call in (
        lambda: storage.set("k", 1, ttl=59.9),
        lambda: storage.set_many({"k": 1}, ttl=30),
    ):
        with pytest.raises(InvalidTTLError, match="minimum TTL of 60s"):
            await call()
    with pytest.raises(InvalidTTLError, match="60"):
        CloudflareKVStorage(ACCOUNT, NAMESPACE, api_token=TOKEN, ttl=10)
    assert requests.sent == []
    await storage.set("k", 1, ttl=60)  # the limit itself is fine
    assert await storage.get("k") == 1


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("é" * 257, "is 514 bytes long; the cloudflare backend allows at most 512 bytes"),
        ("k" * 513, "is 513 bytes long; the cloudflare backend allows at most 512 bytes"),
        (".", "'.' and '..' are not allowed"),
        ("..", "'.' and '..' are not allowed"),
        ("bad\ud800", "not valid Unicode"),
    ],
    ids=["unicode-514", "ascii-513", "dot", "dotdot", "surrogate"],
)
async def test_invalid_keys_are_refused_before_any_request(
    kv: tuple[CloudflareKVStorage, Requests], key: str, match: str
) -> None:
    """Keys KV would refuse raise InvalidKeyError naming the key and the limit, in every op."""
    storage, requests = kv
    await storage.set("keep", 1)
    requests.sent.clear()
    calls: list[Callable[[], Any]] = [
        lambda: storage.get(key),
        lambda: storage.has(key),
        lambda: storage.set(key, 1),
        lambda: storage.delete(key),
        lambda: storage.ttl(key),
        lambda: storage.get_many(["keep", key]),
        lambda: storage.set_many({"keep": 2, key: 1}),
        lambda: storage.delete_many(["keep", key]),
    ]
    for call in calls:
        with pytest.raises(InvalidKeyError, match=match) as info:
            await call()
        # A lone surrogate is named escaped ("bad\\ud800"): the key itself cannot be printed.
        assert info.value.key == key.encode("utf-8", "backslashreplace").decode()
        assert info.value.backend == "cloudflare"
    assert requests.sent == []
    assert await storage.get("keep") == 1


async def test_keys_at_the_limits_round_trip(kv: tuple[CloudflareKVStorage, Requests]) -> None:
    """A key of exactly 512 UTF-8 bytes and keys full of URL syntax are ordinary keys."""
    storage, requests = kv
    keys = ["é" * 256, "k" * 512, "a/b?c=d#e f%20g+h", "...", "./x", "%2F", "../up"]
    for key in keys:
        await storage.set(key, key)
    assert await storage.get_many(keys) == {k: k for k in keys}
    for key in keys:
        assert await storage.get(key) == key
    assert sorted([k async for k in storage.keys()]) == sorted(keys)
    # Each key travels as one percent-encoded path segment.
    paths = {r.url.raw_path.decode() for r in requests.sent if r.method == "PUT"}
    assert any(p.endswith("/values/a%2Fb%3Fc%3Dd%23e%20f%2520g%2Bh") for p in paths)
    assert await storage.delete_many(keys) == len(keys)


async def test_prefixes_with_url_syntax_list_literally(
    kv: tuple[CloudflareKVStorage, Requests],
) -> None:
    """keys(prefix)/clear(prefix)/ttl() send the prefix percent-encoded: "+" is not a space."""
    storage, _ = kv
    keys = ["a+b", "a b", "a&b=c", "a#b", "a%2B", "a?x", "é+"]
    await storage.set_many({k: 1 for k in keys}, ttl=600)
    for key in keys:
        assert [k async for k in storage.keys(key)] == [key]
        left = await storage.ttl(key)
        assert left is not None and 590 <= left <= 600
    assert await storage.clear("a+") == 1
    assert await storage.clear("a ") == 1
    assert sorted([k async for k in storage.keys()]) == sorted(keys[2:])


async def test_value_over_25_mib_is_refused_before_any_request(
    kv: tuple[CloudflareKVStorage, Requests],
) -> None:
    """An encoded value above 25 MiB raises ValueTooLargeError naming key and limit."""
    storage, requests = kv
    await storage.set("big", "old")
    requests.sent.clear()
    huge = "x" * (25 * 1024 * 1024)  # + 2 quote characters once JSON-encoded
    with pytest.raises(ValueTooLargeError, match=r"'big'.*26214402 bytes.*26214400 bytes"):
        await storage.set("big", huge)
    with pytest.raises(ValueTooLargeError, match="'big'"):
        await storage.set_many({"small": 1, "big": huge})
    assert requests.sent == []
    assert await storage.get("big") == "old"
    assert await storage.has("small") is False


async def test_get_many_reads_100_keys_per_bulk_request(
    kv: tuple[CloudflareKVStorage, Requests],
) -> None:
    """get_many of 250 keys is 3 POST /bulk/get requests, results aligned with the keys."""
    storage, requests = kv
    await storage.set_many({f"k{i}": i for i in range(0, 250, 2)})
    requests.sent.clear()
    keys = [f"k{i}" for i in range(250)]
    assert await storage.get_many(keys) == {f"k{i}": i for i in range(0, 250, 2)}
    bulk = [r for r in requests.sent if r.url.path.endswith("/bulk/get")]
    assert len(requests.sent) == len(bulk) == 3
    assert sorted(len(json.loads(r.content)["keys"]) for r in bulk) == [50, 100, 100]


async def test_set_many_delete_many_and_clear_use_bulk_endpoints(
    kv: tuple[CloudflareKVStorage, Requests],
) -> None:
    """set_many is one PUT /bulk; delete_many counts with bulk reads, then one bulk delete."""
    storage, requests = kv
    await storage.set_many({f"u:{i}": {"i": i} for i in range(1500)}, ttl=3600)
    assert [p.split("/", 1)[1] for p in requests.paths()] == ["bulk"]
    left = await storage.ttl("u:7")
    # The emulator writes the batch key by key: u:7's clock started when the request began.
    assert left is not None and 3540 <= left <= 3600
    requests.sent.clear()
    assert await storage.delete_many(["u:1", "u:2", "nope", "u:1"]) == 2
    assert [p.split("/", 1)[1] for p in requests.paths()] == ["bulk/get", "bulk/delete"]
    requests.sent.clear()
    # 1,498 keys over two list pages; each page is deleted with one bulk request.
    assert await storage.clear("u:") == 1498
    assert [p.split("/", 1)[1].split("?")[0] for p in requests.paths()] == [
        "keys",
        "bulk/delete",
        "keys",
        "bulk/delete",
    ]
    assert [k async for k in storage.keys()] == []


async def test_keys_follows_the_cursor_and_tolerates_deletes(
    kv: tuple[CloudflareKVStorage, Requests],
) -> None:
    """keys() pages through 2,100 keys (1000 per page) while they are being deleted."""
    storage, _ = kv
    await storage.set_many({f"p:{i:04d}": i for i in range(2100)})
    await storage.set("q", 0)
    seen = []
    async for key in storage.keys("p:"):
        seen.append(key)
        if len(seen) == 1000:  # delete keys of the page not yet fetched, and some seen
            await storage.delete_many([f"p:{i:04d}" for i in range(990, 1010)])
    assert seen[:1000] == [f"p:{i:04d}" for i in range(1000)]
    assert seen[1000:] == [f"p:{i:04d}" for i in range(1010, 2100)]


async def test_unsupported_operations_name_backend_and_op(
    kv: tuple[CloudflareKVStorage, Requests],
) -> None:
    """add/incr/update raise UnsupportedOperationError without sending or writing anything."""
    storage, requests = kv
    await storage.set("n", 1)
    requests.sent.clear()
    for op, call in (
        ("add", lambda: storage.add("n", 2)),
        ("incr", lambda: storage.incr("n")),
        ("update", lambda: storage.update("n", lambda v: v + 1)),
        ("incr", lambda: storage.with_prefix("v:").incr("n")),
    ):
        with pytest.raises(UnsupportedOperationError, match=rf"cloudflare backend cannot {op}\(\)"):
            await call()
    assert requests.sent == []
    assert await storage.get("n") == 1


async def test_wrong_token_is_an_authentication_error_without_the_token(
    cloudflare_kv: KVEmulator,
) -> None:
    """The emulator answers 403 to a wrong token: AuthenticationError, token never shown."""
    wrong = "wrong-token-do-not-print-0000"
    storage = CloudflareKVStorage(
        cloudflare_kv.account_id,
        cloudflare_kv.namespace_ids[NS_TESTS],
        api_token=wrong,
        base_url=cloudflare_kv.base_url,
    )
    async with storage:
        with pytest.raises(AuthenticationError, match=r"HTTP 403.*Authentication error") as info:
            await storage.get("k")
        assert isinstance(info.value.__cause__, httpx.HTTPStatusError)
        for text in (str(info.value), repr(info.value), repr(storage), str(info.value.__cause__)):
            assert wrong not in text
            assert cloudflare_kv.api_token not in text


async def test_unknown_namespace_is_an_error_not_a_missing_key(cloudflare_kv: KVEmulator) -> None:
    """A 404 that is not "key not found" (code 10009) never reads as a missing key."""
    storage = CloudflareKVStorage(
        cloudflare_kv.account_id,
        "f" * 32,
        api_token=cloudflare_kv.api_token,
        base_url=cloudflare_kv.base_url,
    )
    async with storage:
        with pytest.raises(BackendError, match=r"404.*code 10013: namespace not found"):
            await storage.get("k")
        with pytest.raises(BackendError, match="namespace_id"):
            await storage.has("k")
    bad_root = CloudflareKVStorage(
        cloudflare_kv.account_id,
        cloudflare_kv.namespace_ids[NS_TESTS],
        api_token=cloudflare_kv.api_token,
        base_url=cloudflare_kv.base_url + "/v9",
    )
    async with bad_root:
        with pytest.raises(BackendError, match="base_url"):
            await bad_root.get("k")


async def test_from_url_and_env_token(
    cloudflare_kv: KVEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cloudflare://<account>/<namespace> works through storage_from_url; token from env."""
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", cloudflare_kv.api_token)
    url = (
        f"cloudflare://{cloudflare_kv.account_id}/{cloudflare_kv.namespace_ids[NS_TESTS]}"
        f"?base_url={quote(cloudflare_kv.base_url, safe='')}&retries=1&timeout=5"
    )
    storage = storage_from_url(url, ttl=120)
    assert isinstance(storage, CloudflareKVStorage)
    async with storage:
        await storage.set("from-url", [1])
        assert await storage.get("from-url") == [1]
        left = await storage.ttl("from-url")
        assert left is not None and left <= 120
        await storage.delete("from-url")
        assert repr(storage) == (
            f"CloudflareKVStorage(account_id={cloudflare_kv.account_id!r}, "
            f"namespace_id={cloudflare_kv.namespace_ids[NS_TESTS]!r}, "
            f"base_url={cloudflare_kv.base_url!r}, ttl=120)"
        )
    assert repr(storage).endswith(", ttl=120, closed)")


@pytest.mark.parametrize(
    ("url", "match"),
    [
        (f"cloudflare://{ACCOUNT}", "cloudflare://<account_id>/<namespace_id>"),
        (f"cloudflare://{ACCOUNT}/{NAMESPACE}/extra", "cloudflare://<account_id>/<namespace_id>"),
        (f"cloudflare://{TOKEN}@{ACCOUNT}/{NAMESPACE}", "must not contain credentials"),
        (f"cloudflare://:{TOKEN}@{ACCOUNT}/{NAMESPACE}", "must not contain credentials"),
        (f"cloudflare://my-account/{NAMESPACE}", "account_id must be a Cloudflare id"),
        (f"cloudflare://{ACCOUNT}/sessions", "namespace_id must be a Cloudflare id"),
        (f"cloudflare://{ACCOUNT}/{NAMESPACE}?retries=x", "Invalid cloudflare:// URL option"),
        (f"cloudflare://{ACCOUNT}/{NAMESPACE}?token=x", "Unknown cloudflare:// URL option"),
        (f"cloudflare://{ACCOUNT}?api_token={TOKEN}", "cloudflare://<account_id>/<namespace_id>"),
        (f"cloudflare://{ACCOUNT}/{NAMESPACE}?api_token={TOKEN}", "Unknown cloudflare:// URL"),
    ],
)
def test_bad_urls_raise_configuration_errors(url: str, match: str) -> None:
    """Malformed URLs are ConfigurationErrors, and a token in the URL is never echoed."""
    with pytest.raises(ConfigurationError, match=match) as info:
        CloudflareKVStorage.from_url(url, api_token=TOKEN)
    assert TOKEN not in str(info.value)


def test_a_token_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without api_token, CLOUDFLARE_API_TOKEN or a client, construction fails clearly."""
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="CLOUDFLARE_API_TOKEN"):
        CloudflareKVStorage(ACCOUNT, NAMESPACE)
    with pytest.raises(ConfigurationError, match="retries"):
        CloudflareKVStorage(ACCOUNT, NAMESPACE, api_token=TOKEN, retries=-1)


async def test_close_closes_only_its_own_client(cloudflare_kv: KVEmulator) -> None:
    """The storage closes the client it made, never one passed in; use after close is an error."""
    own = cloudflare_kv.storage(NS_TESTS)
    await own.set("c", 1)
    await own.close()
    assert own.client is not None and own.client.is_closed
    with pytest.raises(StorageClosedError, match=r"after close\(\)"):
        await own.get("c")

    client = httpx.AsyncClient(headers={"Authorization": f"Bearer {cloudflare_kv.api_token}"})
    async with CloudflareKVStorage(
        cloudflare_kv.account_id,
        cloudflare_kv.namespace_ids[NS_TESTS],
        base_url=cloudflare_kv.base_url,
        client=client,
    ) as shared:
        assert await shared.get("c") == 1
        await shared.with_prefix("p:").close()  # a view closes nothing
        assert await shared.delete("c") is True
    assert not client.is_closed
    await client.aclose()


async def test_binary_codec_round_trips(cloudflare_kv: KVEmulator) -> None:
    """A msgpack codec's non-UTF-8 bytes survive single and bulk writes (base64 in bulk)."""
    from gramio_storage import MSGPACK

    storage = cloudflare_kv.storage(NS_TESTS, codec=MSGPACK)
    async with storage:
        await storage.clear()
        value = {"bytes": b"\xff\x00\xfe", "n": 300}
        await storage.set("one", value)
        await storage.set_many({"two": value, "three": [1.5, None]})
        assert await storage.get_many(["one", "two", "three", "none"]) == {
            "one": value,
            "two": value,
            "three": [1.5, None],
        }
        assert await storage.delete_many(["one", "two", "none"]) == 2
        assert await storage.clear() == 1


async def test_storage_is_shared_with_other_storages(cloudflare_kv: KVEmulator) -> None:
    """Two storages (two HTTP clients) on one namespace see each other's writes."""
    a, b = cloudflare_kv.storage(NS_TESTS), cloudflare_kv.storage(NS_TESTS)
    async with a, b:
        await a.clear()
        await a.set("shared", {"by": "a"})
        assert await b.get("shared") == {"by": "a"}
        assert await b.delete("shared") is True
        assert await a.has("shared") is False


@pytest.mark.slow
async def test_a_key_really_expires_after_60_seconds(cloudflare_kv: KVEmulator) -> None:
    """KV's real expiry: a key with ttl=60 vanishes from every read path about 60 s later.

    Miniflare has fake timers internally, but its public API does not expose them for KV, so
    this waits for real, polling instead of sleeping blindly.
    """
    storage = cloudflare_kv.storage(NS_SLOW)
    async with storage:
        await storage.clear()
        await storage.set("short", {"v": 1}, ttl=60)
        await storage.set("long", {"v": 2})
        written = time.monotonic()
        left = await storage.ttl("short")
        assert left is not None and 58 <= left <= 60
        assert await storage.has("short") is True
        while await storage.has("short"):
            assert time.monotonic() - written < 75, "the key outlived its TTL by 15 s"
            await asyncio.sleep(0.5)
        assert time.monotonic() - written >= 58
        assert await storage.get("short", "gone") == "gone"
        assert await storage.get_many(["short", "long"]) == {"long": {"v": 2}}
        assert [k async for k in storage.keys()] == ["long"]
        with pytest.raises(StorageError, match="does not exist"):
            await storage.ttl("short")
        assert await storage.delete("short") is False


# ---------------------------------------------------------------------- error paths (mocked)


class Script:
    """An httpx handler answering from a list of responses (or exceptions), recording requests."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _error(status: int, code: int, message: str, **headers: str) -> httpx.Response:
    body = {"success": False, "errors": [{"code": code, "message": message}], "result": None}
    return httpx.Response(status, json=body, headers=headers)


def _ok(result: Any = None) -> httpx.Response:
    return httpx.Response(200, json={"success": True, "errors": [], "result": result})


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the waits between retries instead of sleeping."""
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(_rest, "_sleep", fake_sleep)
    return waits


_clients: list[httpx.AsyncClient] = []


@pytest.fixture(autouse=True)
async def _close_mock_clients() -> AsyncIterator[None]:
    yield
    while _clients:
        await _clients.pop().aclose()


def _mocked(script: Script, **options: Any) -> CloudflareKVStorage:
    """A storage on a scripted transport (a caller's client: the token goes per request)."""
    client = httpx.AsyncClient(transport=httpx.MockTransport(script))
    _clients.append(client)
    return CloudflareKVStorage(ACCOUNT, NAMESPACE, api_token=TOKEN, client=client, **options)


async def test_429_is_retried_honouring_retry_after(sleeps: list[float]) -> None:
    """HTTP 429 waits exactly what retry-after says, then succeeds."""
    script = Script(
        _error(429, 10429, "rate limited", **{"retry-after": "2"}),
        _error(429, 10429, "rate limited", **{"retry-after": "0.5"}),
        httpx.Response(200, content=b'{"ok":true}'),
    )
    storage = _mocked(script)
    assert await storage.get("k") == {"ok": True}
    assert sleeps == [2.0, 0.5]
    assert len(script.requests) == 3


async def test_429_beyond_the_retries_raises_rate_limited(sleeps: list[float]) -> None:
    """After `retries` retries a 429 becomes RateLimitedError carrying retry_after."""
    script = Script(_error(429, 10429, "Too many requests", **{"retry-after": "1"}))
    storage = _mocked(script, retries=2)
    with pytest.raises(RateLimitedError, match=r"'k' after 3 attempts.*retry after 1s") as info:
        await storage.set("k", 1)
    assert info.value.retry_after == 1.0
    assert len(script.requests) == 3
    assert sleeps == [1.0, 1.0]


async def test_long_retry_after_is_not_waited_for(sleeps: list[float]) -> None:
    """A retry-after above max_retry_wait (the API's 5-minute block) raises at once."""
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 300))
    for header in ("300", when):
        script = Script(_error(429, 10429, "blocked", **{"retry-after": header}))
        storage = _mocked(script, max_retry_wait=30)
        with pytest.raises(RateLimitedError) as info:
            await storage.get("k")
        assert info.value.retry_after is not None and 290 <= info.value.retry_after <= 300
        assert len(script.requests) == 1
    assert sleeps == []


async def test_5xx_is_retried_with_backoff(sleeps: list[float]) -> None:
    """5xx answers are retried with growing, jittered waits; then the answer is used."""
    script = Script(
        httpx.Response(502, text="<html>bad gateway</html>"),
        _error(500, 10001, "internal"),
        _error(503, 10001, "unavailable"),
        _ok(),
    )
    storage = _mocked(script)
    await storage.set("k", 1)
    assert len(script.requests) == 4
    assert len(sleeps) == 3
    assert 0.125 <= sleeps[0] <= 0.25 and 0.25 <= sleeps[1] <= 0.5 and 0.5 <= sleeps[2] <= 1.0


async def test_persistent_5xx_is_backend_unavailable(sleeps: list[float]) -> None:
    """A 5xx that outlasts the retries raises BackendUnavailableError with the HTTP cause."""
    script = Script(_error(503, 10001, "unavailable"))
    storage = _mocked(script, retries=1)
    with pytest.raises(BackendUnavailableError, match=r"HTTP 503.*after 2 attempts") as info:
        await storage.has("k")
    assert isinstance(info.value.__cause__, httpx.HTTPStatusError)
    assert len(script.requests) == 2


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_errors_never_contain_the_token(status: int, sleeps: list[float]) -> None:
    """401/403 raise AuthenticationError at once; no message, repr or cause shows the token."""
    # A server that (wrongly) echoes the token must not make us leak it either.
    script = Script(_error(status, 10000, f"Authentication error for Bearer {TOKEN}"))
    storage = _mocked(script)
    with pytest.raises(AuthenticationError, match=f"HTTP {status}") as info:
        await storage.set_many({"a": 1})
    assert len(script.requests) == 1 and sleeps == []
    assert script.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    texts = [str(info.value), repr(info.value), repr(storage), str(info.value.__cause__)]
    assert all(TOKEN not in text for text in texts)
    assert "***" in str(info.value)


async def test_network_failures_are_retried_then_typed(sleeps: list[float]) -> None:
    """Timeouts and connection errors are retried, then raised as typed errors with the cause."""
    script = Script(httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), _ok())
    storage = _mocked(script)
    await storage.delete_many([])  # no request at all
    await storage.set("k", 1)
    assert len(script.requests) == 3

    storage = _mocked(Script(httpx.ConnectTimeout("slow")), retries=1)
    with pytest.raises(BackendTimeoutError, match="'k'") as timeout_info:
        await storage.get("k")
    assert isinstance(timeout_info.value.__cause__, httpx.ConnectTimeout)
    storage = _mocked(Script(httpx.ConnectError("refused")), retries=0)
    with pytest.raises(BackendUnavailableError, match="Cannot reach Cloudflare KV") as info:
        await storage.get("k")
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_unsuccessful_bulk_keys_are_listed(sleeps: list[float]) -> None:
    """A bulk write whose result names unsuccessful keys raises an error listing them."""
    result = {"successful_key_count": 1, "unsuccessful_keys": ["b", "c"]}
    storage = _mocked(Script(_ok(result)))
    with pytest.raises(BackendError, match=r"could not write 2 of 3 keys.*'b', 'c'") as info:
        await storage.set_many({"a": 1, "b": 2, "c": 3})
    assert info.value.key == "b"


async def test_set_many_sends_10000_items_per_bulk_request(sleeps: list[float]) -> None:
    """20,001 items go out as bulk writes of 10,000, 10,000 and 1, with the TTL on each."""
    script = Script(_ok({"successful_key_count": 0, "unsuccessful_keys": []}))
    storage = _mocked(script)
    await storage.set_many({f"k{i}": i for i in range(20_001)}, ttl=120)
    bodies = [json.loads(r.content) for r in script.requests]
    assert [len(b) for b in bodies] == [10_000, 10_000, 1]
    assert bodies[0][0] == {"key": "k0", "value": "0", "expiration_ttl": 120}
    assert bodies[2] == [{"key": "k20000", "value": "20000", "expiration_ttl": 120}]
    assert {r.method + " " + r.url.path.rsplit("/", 1)[1] for r in script.requests} == {"PUT bulk"}


async def test_set_many_splits_requests_at_100_mb(
    sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bulk body stays under the API's 100 MB limit (shrunk here to 1 kB to test it)."""
    monkeypatch.setattr(_rest, "BULK_WRITE_BYTES", 1000)
    script = Script(_ok({"unsuccessful_keys": []}))
    storage = _mocked(script)
    await storage.set_many({f"k{i}": "x" * 90 for i in range(25)})
    sizes = [len(r.content) for r in script.requests]
    assert len(sizes) >= 3
    assert all(size <= 1000 for size in sizes)
    assert all(size > 1000 - 130 for size in sizes[:-1])  # full: the next entry did not fit
    assert sum(len(json.loads(r.content)) for r in script.requests) == 25


async def test_a_non_json_answer_is_a_backend_error(sleeps: list[float]) -> None:
    """An HTML page where JSON was expected (a proxy, say) is a BackendError, not a crash."""
    storage = _mocked(Script(httpx.Response(200, text="<html>hi</html>")))
    with pytest.raises(BackendError, match="not JSON"):
        await storage.get_many(["a"])


# ---------------------------------------------------------------------- binding specifics


async def test_binding_writes_json_text_another_worker_reads() -> None:
    """Binding mode puts JSON text with expirationTtl; a GramIO Worker reads the same text."""
    binding = KVBindingDouble()
    storage = CloudflareKVStorage.from_binding(binding)
    await storage.set("session:1", {"step": 2}, ttl=120)
    assert binding.raw("session:1") == b'{"step":2}'
    assert await binding.get("session:1", "json") == {"step": 2}
    await binding.put("gramio", '{"from":"js"}')
    assert await storage.get("gramio") == {"from": "js"}
    left = await storage.ttl("session:1")
    assert left is not None and 118 <= left <= 120
    assert repr(storage) == "CloudflareKVStorage(binding='KVBindingDouble')"


async def test_binding_bulk_get_reads_100_keys_per_call() -> None:
    """get_many uses binding.get([...]) in chunks of 100, or single gets when turned off."""
    binding = KVBindingDouble()
    storage = CloudflareKVStorage.from_binding(binding)
    await storage.set_many({f"k{i}": i for i in range(150)})
    binding.calls.clear()
    keys = [f"k{i}" for i in range(250)]
    assert await storage.get_many(keys) == {f"k{i}": i for i in range(150)}
    assert binding.calls == ["get", "get", "get"]
    single = CloudflareKVStorage.from_binding(binding, bulk_get=False)
    binding.calls.clear()
    assert await single.get_many(["k1", "k2", "zz"]) == {"k1": 1, "k2": 2}
    assert binding.calls == ["get", "get", "get"]


async def test_binding_options_go_through_to_js() -> None:
    """Option dicts and key lists pass through the to_js converter (Pyodide's in a Worker)."""
    seen: list[Any] = []

    def to_js(value: Any) -> Any:
        seen.append(value)
        return value

    storage = CloudflareKVStorage.from_binding(KVBindingDouble(), to_js=to_js)
    await storage.set("a", 1, ttl=61.9)
    await storage.get_many(["a", "b"])
    _ = [k async for k in storage.keys("a")]
    assert seen == [{"expirationTtl": 61}, ["a", "b"], {"limit": 1000, "prefix": "a"}]


async def test_binding_binary_values_use_array_buffers() -> None:
    """A non-JSON codec's bytes are written as binary and read back with type arrayBuffer."""
    from gramio_storage import MSGPACK

    binding = KVBindingDouble()
    storage = CloudflareKVStorage.from_binding(binding, codec=MSGPACK)
    await storage.set_many({"a": b"\xff\x00", "b": {"n": 1}})
    assert await storage.get_many(["a", "b", "c"]) == {"a": b"\xff\x00", "b": {"n": 1}}
    assert binding.raw("a") == MSGPACK.encode(b"\xff\x00")


async def test_binding_errors_are_typed_and_chained() -> None:
    """A binding rejection ("KV PUT failed: 413 ...") surfaces as our error with the cause."""
    binding = KVBindingDouble()
    storage = CloudflareKVStorage.from_binding(binding)

    async def failing_put(key: str, value: Any, options: Any = None) -> None:
        raise RuntimeError("KV PUT failed: 413 Value length of 99 exceeds limit of 10.")

    binding.put = failing_put  # type: ignore[method-assign]
    with pytest.raises(ValueTooLargeError, match="KV PUT failed: 413") as info:
        await storage.set("k", 1)
    assert isinstance(info.value.__cause__, RuntimeError)

    async def failing_list(options: Any = None) -> None:
        raise RuntimeError("KV LIST failed: 500 internal")

    binding.list = failing_list  # type: ignore[method-assign]
    with pytest.raises(BackendError, match="bulk request: KV LIST failed: 500"):
        await storage.clear()


async def test_binding_refuses_invalid_input_before_calling() -> None:
    """Keys and TTLs KV would refuse, and the atomic ops, fail before any binding call."""
    binding = KVBindingDouble()
    storage = CloudflareKVStorage.from_binding(binding)
    with pytest.raises(InvalidKeyError, match="512"):
        await storage.set("k" * 513, 1)
    with pytest.raises(InvalidTTLError, match="60"):
        await storage.set("k", 1, ttl=30)
    with pytest.raises(UnsupportedOperationError, match="cannot incr"):
        await storage.incr("k")
    assert binding.calls == []


def test_from_binding_checks_the_object() -> None:
    """An object without the binding's methods is a ConfigurationError naming what is missing."""
    with pytest.raises(ConfigurationError, match="has no put"):
        CloudflareKVStorage.from_binding(MemoryStorage())  # type: ignore[arg-type]
    storage = CloudflareKVStorage.from_binding(KVBindingDouble())
    assert type(storage) is CloudflareKVStorage and storage.mode == "binding"


def test_env_token_is_not_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The token from the environment is used but never shown."""
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    storage = CloudflareKVStorage(ACCOUNT, NAMESPACE)
    assert TOKEN not in repr(storage)
    assert storage.client is not None
    assert storage.client.headers["authorization"] == f"Bearer {TOKEN}"
    assert os.environ["CLOUDFLARE_API_TOKEN"] == TOKEN


# ---------------------------------------------------------------------- v2: one class, two clients


def test_binding_variant_properties_are_typed_not_attribute_errors() -> None:
    """On a binding, the REST-only properties are None (never AttributeError); REST has them."""
    binding = KVBindingDouble()
    storage = cloudflare_storage(binding)  # GramIO's cloudflareStorage(env.KV)
    assert type(storage) is CloudflareKVStorage
    assert storage.mode == "binding" and storage.binding is binding
    assert storage.account_id is None
    assert storage.namespace_id is None
    assert storage.base_url is None
    assert storage.client is None
    assert isinstance(storage.backend, CloudflareKVBackend)
    assert isinstance(storage.backend.client, BindingClient)
    assert (
        storage.capabilities
        == CloudflareKVStorage(ACCOUNT, NAMESPACE, api_token=TOKEN).capabilities
    )

    rest = CloudflareKVStorage(ACCOUNT, NAMESPACE, api_token=TOKEN)
    assert rest.mode == "rest" and rest.binding is None
    assert (rest.account_id, rest.namespace_id) == (ACCOUNT, NAMESPACE)
    assert rest.base_url == "https://api.cloudflare.com/client/v4"
    assert isinstance(rest.client, httpx.AsyncClient)
    assert isinstance(rest.backend.client, RestClient)


def test_one_class_declares_kv_capabilities() -> None:
    """Both clients sit under one backend whose Capabilities state KV's limits."""
    caps = CloudflareKVStorage.from_binding(KVBindingDouble()).capabilities
    assert caps.name == "cloudflare"
    assert (caps.atomic, caps.atomic_ops, caps.ttl, caps.lists_ttls) == (False, False, True, True)
    assert (caps.persistent, caps.shared, caps.eventually_consistent) == (True, True, True)
    assert (caps.min_ttl, caps.max_key_bytes, caps.max_value_bytes) == (60, 512, 25 * 1024**2)
    assert caps.max_ttl == 10 * 365 * 86_400


@pytest.mark.parametrize(
    "rest_option",
    [
        {"account_id": ACCOUNT},
        {"namespace_id": NAMESPACE},
        {"api_token": TOKEN},
        {"base_url": "http://x"},
    ],
    ids=lambda o: next(iter(o)),
)
def test_binding_and_rest_options_do_not_mix(rest_option: dict[str, str]) -> None:
    """binding= with a REST option is a ConfigurationError naming it (a token never shown)."""
    with pytest.raises(ConfigurationError, match=next(iter(rest_option))) as info:
        CloudflareKVStorage(binding=KVBindingDouble(), **rest_option)  # type: ignore[arg-type]
    assert TOKEN not in str(info.value)


def test_construction_options_are_checked() -> None:
    """Bad ids and numbers are ConfigurationErrors; a binding hint is given for missing ids."""
    with pytest.raises(ConfigurationError, match=r"binding=env\.KV"):
        CloudflareKVStorage(api_token=TOKEN)
    for bad in (
        {"timeout": 0},
        {"timeout": "5"},
        {"connect_timeout": -1},
        {"max_connections": 0},
        {"retries": 1.5},
        {"max_retry_wait": -1},
    ):
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            CloudflareKVStorage(ACCOUNT, NAMESPACE, api_token=TOKEN, **bad)  # type: ignore[arg-type]
    CloudflareKVStorage(ACCOUNT, NAMESPACE, api_token=TOKEN, timeout=None, max_retry_wait=0)


async def test_absurd_and_long_ttls(kv: tuple[CloudflareKVStorage, Requests]) -> None:
    """TTLs past max_ttl are InvalidTTLError before any request; ten years is accepted by KV."""
    storage, requests = kv
    for absurd in (10**13, 10 * 365 * 86_400 + 1, 10**400):
        with pytest.raises(InvalidTTLError, match=r"maximum TTL|finite"):
            await storage.set("k", 1, ttl=absurd)
    assert requests.sent == []
    ten_years = 10 * 365 * 86_400
    await storage.set("k", 1, ttl=ten_years)
    left = await storage.ttl("k")
    assert left is not None and ten_years - 5 <= left <= ten_years
    assert {k: t is not None and t > 10**8 async for k, t in storage.backend.scan_ttl("k")} == {
        "k": True
    }


async def test_a_second_event_loop_gets_its_own_client(cloudflare_kv: KVEmulator) -> None:
    """A second asyncio.run() makes a new HTTP client; the first loop's client keeps working."""
    storage = cloudflare_kv.storage(NS_TESTS)
    await storage.set("loop", 1)
    first = storage.client

    def other_loop() -> Any:
        return asyncio.run(storage.get("loop"))

    assert await asyncio.to_thread(other_loop) == 1
    assert storage.client is not first  # the thread's loop had its own client
    assert await storage.delete("loop") is True  # back on the first loop: its client again
    assert storage.client is first
    await storage.close()
    assert first is not None and first.is_closed


async def test_the_token_never_shows_in_repr_errors_or_logs(
    cloudflare_kv: KVEmulator, caplog: pytest.LogCaptureFixture, sleeps: list[float]
) -> None:
    """The API token stays out of repr, messages, causes, tracebacks' text and httpx's logs."""
    caplog.set_level(logging.DEBUG)
    leaky = Script(_error(403, 10000, f"bad token {TOKEN}"))
    mocked = _mocked(leaky)
    real = CloudflareKVStorage(
        cloudflare_kv.account_id,
        cloudflare_kv.namespace_ids[NS_TESTS],
        api_token=TOKEN,  # the emulator refuses it (403)
        base_url=cloudflare_kv.base_url,
    )
    unreachable = CloudflareKVStorage(
        ACCOUNT, NAMESPACE, api_token=TOKEN, base_url="http://127.0.0.1:9/v4", retries=0
    )
    texts = [repr(mocked), repr(real), repr(unreachable), repr(mocked.backend.client)]
    for storage, error in (
        (mocked, AuthenticationError),
        (real, AuthenticationError),
        (unreachable, BackendUnavailableError),
    ):
        with pytest.raises(error) as info:
            await storage.set("k", 1)
        chain: BaseException | None = info.value
        while chain is not None:
            texts += [str(chain), repr(chain)]
            chain = chain.__cause__
        texts.append("".join(traceback.format_exception(info.value)))
    await real.close()
    await unreachable.close()
    texts += [record.getMessage() for record in caplog.records]
    assert any("HTTP Request" in record.getMessage() for record in caplog.records)
    assert all(TOKEN not in text for text in texts)
