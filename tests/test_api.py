"""The public surface, typed keys, the error tree and storage_from_url."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest

import gramio_storage
from gramio_storage import (
    Backend,
    BaseStorage,
    Capabilities,
    CodecError,
    ConfigurationError,
    DecodeError,
    EncodeError,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidTTLError,
    Key,
    KeyNotFoundError,
    MemoryStorage,
    MissingDependencyError,
    Storage,
    StorageError,
    UnknownSchemeError,
    UnsupportedOperationError,
    _registry,
    storage_from_url,
)


def test_public_names_are_pinned() -> None:
    """The curated namespace changes only on purpose (update this list and the changelog)."""
    assert gramio_storage.__all__ == [
        "GONE",
        "JSON",
        "MSGPACK",
        "TTL",
        "AuthenticationError",
        "Backend",
        "BackendError",
        "BackendTimeoutError",
        "BackendUnavailableError",
        "BaseStorage",
        "CachedStorage",
        "Capabilities",
        "CloudflareKVStorage",
        "Codec",
        "CodecError",
        "CompressedCodec",
        "ConfigurationError",
        "DecodeError",
        "EncodeError",
        "EncryptedStorage",
        "Entry",
        "FallbackStorage",
        "InvalidArgumentError",
        "InvalidKeyError",
        "InvalidTTLError",
        "JSONCodec",
        "Key",
        "KeyNotFoundError",
        "MemoryBackend",
        "MemoryStorage",
        "MissingDependencyError",
        "MsgpackCodec",
        "PostgresStorage",
        "RateLimitedError",
        "RedisStorage",
        "SQLiteStorage",
        "Storage",
        "StorageClosedError",
        "StorageError",
        "UnknownSchemeError",
        "UnsupportedOperationError",
        "ValueTooLargeError",
        "__version__",
        "clamp_ttl",
        "cloudflare_storage",
        "in_memory_storage",
        "instrument",
        "redis_storage",
        "sqlite_storage",
        "storage_from_url",
        "with_fallback_storages",
    ]
    for name in gramio_storage.__all__:
        assert getattr(gramio_storage, name) is not None


def test_importing_the_package_imports_no_optional_driver() -> None:
    """`import gramio_storage` stays light: no backend driver is loaded."""
    import subprocess
    import sys

    code = (
        "import sys, gramio_storage; "
        "print(sorted(m for m in ('redis','asyncpg','aiosqlite','httpx','aiogram','telegram',"
        "'rich','pydantic','hypothesis','pytest') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_error_tree_also_speaks_builtin_exceptions() -> None:
    """Each error is a StorageError and the builtin a Python user would catch."""
    assert issubclass(InvalidKeyError, TypeError) and issubclass(InvalidKeyError, ValueError)
    assert issubclass(InvalidTTLError, ValueError)
    assert issubclass(InvalidArgumentError, TypeError)
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(InvalidKeyError, InvalidArgumentError)
    assert issubclass(EncodeError, CodecError) and issubclass(EncodeError, TypeError)
    assert issubclass(DecodeError, CodecError) and issubclass(DecodeError, ValueError)
    assert issubclass(KeyNotFoundError, KeyError)
    assert issubclass(UnsupportedOperationError, NotImplementedError)
    assert issubclass(MissingDependencyError, ImportError)
    assert issubclass(UnknownSchemeError, ConfigurationError)
    for name in gramio_storage.__all__:
        obj = getattr(gramio_storage, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, StorageError), name
    assert str(KeyNotFoundError("Key 'x' does not exist", key="x")) == "Key 'x' does not exist"


def test_error_tree_is_drawn_in_the_module_docstring() -> None:
    """Every exception class appears in the tree drawn in _errors' docstring."""
    from gramio_storage import _errors

    doc = _errors.__doc__ or ""
    for name in _errors.__all__:
        assert name in doc, name


def test_key_template_and_identity() -> None:
    """A Key formats into a concrete, immutable, hashable key of the same type."""
    user = Key("user:{id}:{part}", dict)
    assert user.is_template
    concrete = user.format(id=1, part="profile")
    assert concrete.name == "user:1:profile" and concrete.type is dict
    assert not concrete.is_template
    assert concrete == Key("user:1:profile", dict)
    assert concrete != Key("user:1:profile", list)
    assert {concrete: 1}[Key("user:1:profile", dict)] == 1
    assert copy.deepcopy(concrete) is concrete
    assert repr(concrete) == "Key('user:1:profile', dict)"
    with pytest.raises(AttributeError):
        concrete.name = "other"  # type: ignore[misc]
    with pytest.raises(InvalidKeyError, match="part"):
        user.format(id=1)
    with pytest.raises(InvalidKeyError):
        Key("bad {", int)
    with pytest.raises(InvalidKeyError):
        Key(123, int)  # type: ignore[call-overload]


async def test_formatted_values_with_braces_are_data() -> None:
    """A field value containing braces does not become a template again."""
    storage = MemoryStorage()
    key = Key("note:{title}", str).format(title="{weird}")
    await storage.set(key, "x")
    assert await storage.get("note:{weird}") == "x"


async def test_str_subclass_keys_use_their_text() -> None:
    """A StrEnum member works as a key (its value is the key text)."""
    from enum import StrEnum

    class Keys(StrEnum):
        GREETING = "greeting"

    storage = MemoryStorage()
    await storage.set(Keys.GREETING, "hi")
    assert await storage.get("greeting") == "hi"


async def test_storage_protocol_accepts_any_four_method_object() -> None:
    """GramIO's 'return an object with the four methods' is a Storage too."""

    class Tiny:
        def __init__(self) -> None:
            self.d: dict[str, object] = {}

        async def get(self, key: str, default: object = None) -> object:
            return self.d.get(key, default)

        async def has(self, key: str) -> bool:
            return key in self.d

        async def set(self, key: str, value: object, *, ttl: object = None) -> None:
            self.d[key] = value

        async def delete(self, key: str) -> bool:
            return self.d.pop(key, None) is not None

    assert isinstance(Tiny(), Storage)
    assert not isinstance(object(), Storage)
    assert isinstance(MemoryStorage(), Storage)


async def test_backend_missing_a_required_method_fails_at_construction() -> None:
    """A Backend subclass that forgot `set` cannot be instantiated, and says which method."""

    class Incomplete(Backend):
        async def get(self, key: str) -> bytes | None:
            return None

        async def delete(self, key: str) -> bool:
            return False

        async def scan(self, prefix: str):  # type: ignore[no-untyped-def]
            yield prefix

    with pytest.raises(TypeError, match="set"):
        Incomplete()  # type: ignore[abstract]
    with pytest.raises(ConfigurationError, match="Backend"):
        BaseStorage(object())  # type: ignore[arg-type]


async def test_a_backend_own_attributes_never_collide_with_the_facade() -> None:
    """A backend may name its attributes _root, _lock, _prefix or _codec: the facade is apart."""

    class Dict(Backend):
        capabilities = Capabilities(name="dict")

        def __init__(self) -> None:
            self._root = "mine"
            self._lock = "mine"
            self._prefix = "mine"
            self._codec = "mine"
            self.d: dict[str, bytes] = {}

        async def get(self, key: str) -> bytes | None:
            return self.d.get(key)

        async def set(self, key: str, data: bytes, ttl: float | None) -> None:
            self.d[key] = data

        async def delete(self, key: str) -> bool:
            return self.d.pop(key, None) is not None

        async def scan(self, prefix: str):  # type: ignore[no-untyped-def]
            for key in list(self.d):
                if key.startswith(prefix):
                    yield key

    storage = BaseStorage(Dict())
    view = storage.with_prefix("v:")
    await view.set("k", {"a": 1})
    assert await storage.get("v:k") == {"a": 1}
    assert await view.update("k", lambda v: {**v, "b": 2}) == {"a": 1, "b": 2}
    assert await view.incr("n") == 1
    assert view.backend is storage.backend
    assert [k async for k in storage.keys()] == ["v:k", "v:n"]


def test_backend_classes_import_lazily_from_the_root() -> None:
    """`from gramio_storage import SQLiteStorage` works, and GramIO's factory names exist."""
    from gramio_storage import SQLiteStorage, in_memory_storage, sqlite_storage

    assert SQLiteStorage.__module__.startswith("gramio_storage.sqlite")
    assert callable(sqlite_storage)
    mapping: dict[str, object] = {}
    assert isinstance(in_memory_storage(mapping), MemoryStorage)
    with pytest.raises(AttributeError):
        gramio_storage.NoSuchStorage  # noqa: B018


def test_prefix_option_works_on_any_url() -> None:
    """?prefix= is applied by the registry: the storage is a view, and it owns its backend."""
    storage = storage_from_url("memory://?prefix=bot1:&ttl=5")
    assert storage.prefix == "bot1:" and storage.default_ttl == 5


async def test_closing_a_url_prefix_view_closes_the_storage() -> None:
    """The ?prefix= view is the only handle the caller has: closing it closes the storage."""
    storage = storage_from_url("memory://?prefix=bot1:")
    await storage.set("k", 1)
    await storage.close()
    assert storage.closed


@pytest.mark.parametrize(
    ("url", "leak"),
    [
        ("redis://:p/ss?w#rd@localhost:6379/0", ["p/ss", "w#rd", "ss?w"]),
        ("postgresql://bot:s3cr@t/x?y@db.local/bot", ["s3cr", "t/x", "x?y"]),
        ("redis://localhost/0?password=hunter22", ["hunter22"]),
    ],
)
def test_mask_url_hides_passwords_with_unencoded_separators(url: str, leak: list[str]) -> None:
    """The one redactor never shows a fragment of a password holding / ? # @."""
    from gramio_storage._redact import Redactor, mask_url

    masked = mask_url(url)
    assert "***" in masked
    for fragment in leak:
        assert fragment not in masked, masked
    redact = Redactor()
    redact.add_url(url)
    assert all(f not in redact(f"failed to reach {url}") for f in leak)


def test_memory_url() -> None:
    """memory:// builds a MemoryStorage and passes options through."""
    storage = storage_from_url("memory://", ttl=5, max_size=10)
    assert isinstance(storage, MemoryStorage)
    assert storage.default_ttl == 5
    from_query = storage_from_url("memory://?ttl=7&max_size=3")
    assert from_query.default_ttl == 7
    assert "max_size=3" in repr(from_query)
    with pytest.raises(ConfigurationError, match="bogus"):
        storage_from_url("memory://?bogus=1")
    with pytest.raises(ConfigurationError):
        storage_from_url("memory://?ttl=soon")


@pytest.mark.parametrize("url", ["nope://x", "MEMCACHE://localhost"])
def test_unknown_scheme_lists_known_schemes(url: str) -> None:
    """An unknown scheme names itself and every scheme that would work."""
    with pytest.raises(UnknownSchemeError) as info:
        storage_from_url(url)
    message = str(info.value)
    assert url.split(":")[0].lower() in message
    for scheme in ("memory", "sqlite", "redis", "postgresql", "cloudflare"):
        assert scheme in message


@pytest.mark.parametrize("url", ["", "memory", "/tmp/x.db", 42])
def test_malformed_urls_are_configuration_errors(url: object) -> None:
    """Something that is not scheme://... raises ConfigurationError."""
    with pytest.raises(ConfigurationError):
        storage_from_url(url)  # type: ignore[arg-type]


def test_missing_extra_names_the_pip_command() -> None:
    """A backend whose driver is not installed says exactly what to install, once."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import gramio_storage\n"
        "for attempt in ('url', 'name'):\n"
        "    try:\n"
        "        if attempt == 'url': gramio_storage.storage_from_url('redis://localhost')\n"
        "        else: gramio_storage.RedisStorage\n"
        "    except gramio_storage.MissingDependencyError as e: print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert line.count("pip install 'gramio-storage[redis]'") == 1, line


def test_third_party_adapters_register_by_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed gramio-storage-* package adds its scheme through the entry-point group."""
    (tmp_path / "gramio_storage_demo_adapter.py").write_text(
        textwrap.dedent(
            """
            from gramio_storage import MemoryStorage

            class DemoStorage(MemoryStorage):
                @classmethod
                def from_url(cls, url, **options):
                    storage = cls(**options)
                    storage.url = url
                    return storage
            """
        )
    )
    dist = tmp_path / "gramio_storage_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: gramio-storage-demo\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[gramio_storage.adapters]\ndemo = gramio_storage_demo_adapter:DemoStorage\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    storage = storage_from_url("demo://somewhere", ttl=3)
    assert storage.__class__.__name__ == "DemoStorage"
    assert storage.url == "demo://somewhere"  # type: ignore[attr-defined]
    assert storage.default_ttl == 3
    assert "demo" in _registry.known_schemes()


def test_prefix_option_keeps_the_rest_of_the_url_as_written() -> None:
    """Cutting ?prefix= leaves unix:///path, other options and escapes exactly as they were."""
    from gramio_storage._registry import _split_prefix

    cut = _split_prefix("unix:///tmp/r.sock?db=1&prefix=a%3Ab")
    assert cut == ("unix:///tmp/r.sock?db=1", "a:b")
    assert _split_prefix("redis://h/0?prefix=&ttl=3") == ("redis://h/0?ttl=3", "")
    assert _split_prefix("sqlite:///x.db") == ("sqlite:///x.db", None)
