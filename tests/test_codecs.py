"""Codecs: GramIO wire compatibility, typed decoding, custom codecs, no pickle."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import sqlite3
import subprocess
import uuid
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any, TypedDict

import msgspec
import pydantic
import pytest

from _cloudflare_server import KVEmulator, cloudflare_kv  # noqa: F401 (fixture)
from _pg_server import postgres_dsn  # noqa: F401 (fixture)
from _redis_server import redis_server_session, redis_url  # noqa: F401 (fixtures)
from gramio_storage import JSON, MSGPACK, Codec, DecodeError, Key, MemoryStorage, _codecs

# Values a bot stores. For these, JSON.stringify (run by Node itself) and our codec must agree
# byte for byte.
WIRE_SAMPLES: list[Any] = [
    {"step": "ask_age", "name": "Alice", "age": 30},
    {"nested": {"list": [1, 2.5, -3, None, True, False]}, "empty": {}, "arr": []},
    "Привет, 世界 🎉",
    'quotes " and \\ backslash / slash',
    "control \x01 \t \n \x7f \u2028 chars",
    [0.1, -0.5, 123456789012345, 2**53, 1.5e-7, 1e-5, 1e-7, 5e-324],
    # Unpaired surrogates: what JavaScript's .slice() leaves when it cuts an emoji in two.
    {"text": "hi \ud83d", "tail": "\ude00 there", "pair": "\ud83d\ude00", "\udbff": "key"},
    ["\ud83d", "\ud83d\ud83d", "a\udfffb"],
]

# Every float notation where msgspec and JSON.stringify differ (the codec docstring's table):
# (value, our bytes, JSON.stringify's bytes). JSON.parse reads the same number from both.
FLOAT_NOTATIONS: list[tuple[float, str, str]] = [
    (2.0, "2.0", "2"),
    (100.0, "100.0", "100"),
    (0.0, "0.0", "0"),
    (-0.0, "-0.0", "0"),
    (9007199254740992.0, "9007199254740992.0", "9007199254740992"),
    (1e16, "1e16", "10000000000000000"),
    (1.2345e20, "1.2345e20", "123450000000000000000"),
    (1e21, "1e21", "1e+21"),
    (-2.5e300, "-2.5e300", "-2.5e+300"),
    (1e-6, "1e-6", "0.000001"),
    (-5.5e-6, "-5.5e-6", "-0.0000055"),
]


def _float_differs(x: float) -> bool:
    """The codec docstring's rule for where our float bytes differ from JSON.stringify's."""
    a = abs(x)
    return (a < 1e16 and a == int(a)) or a >= 1e16 or 1e-6 <= a < 1e-5


def _node(script: str, lines: list[str]) -> list[str]:
    node = shutil.which("node")
    assert node is not None, "Node.js is required for the GramIO wire-compatibility test"
    result = subprocess.run(
        [node, "-e", script],
        input=("\n".join(lines) + "\n").encode(),
        capture_output=True,
        check=True,
    )
    return result.stdout.decode().split("\n")[:-1]  # not splitlines(): U+2028 is data here


_STRINGIFY_PARSED = (
    "const lines=require('fs').readFileSync(0,'utf8').split('\\n').filter(Boolean);"
    "for (const l of lines) console.log(JSON.stringify(JSON.parse(l)));"
)


def _node_stringify(values: list[Any]) -> list[str]:
    """JSON.stringify(JSON.parse(line)) in Node, for each value (sent as escaped ASCII JSON)."""
    return _node(_STRINGIFY_PARSED, [json.dumps(v) for v in values])


def test_json_bytes_equal_javascript_json_stringify() -> None:
    """The default codec writes the exact bytes a GramIO (Node) bot writes for the same data."""
    assert [JSON.encode(v).decode() for v in WIRE_SAMPLES] == _node_stringify(WIRE_SAMPLES)


def test_nan_and_infinities_are_refused_where_javascript_writes_null() -> None:
    """JSON has no NaN or Infinity: JavaScript writes null (read back as None); we refuse."""
    assert _node("console.log(JSON.stringify([NaN, Infinity, -Infinity]))", []) == [
        "[null,null,null]"
    ]
    for value in ([math.nan], {"a": {"b": [math.inf]}}, -math.inf, (1.0, math.nan)):
        with pytest.raises(ValueError, match="NaN or infinity"):
            JSON.encode(value)
    assert JSON.encode([None, 1.5]) == b"[null,1.5]"  # a real null is fine


def test_float_notation_differs_from_json_stringify_exactly_as_documented() -> None:
    """Floats print as JSON.stringify prints them except the documented notations."""
    rng = random.Random(14)
    spread = [
        sign * rng.uniform(1, 10) * 10.0**exponent
        for exponent in range(-12, 26)
        for sign in (1, -1)
        for _ in range(5)
    ]
    whole = [float(rng.randrange(-(10**6), 10**6)) for _ in range(50)] + [1e15, 2.0**53, 1e16]
    edges = [math.nextafter(b, d) for b in (1e-6, 1e-5, 1e16, 1e21) for d in (0, math.inf)]
    floats = spread + whole + edges + [x for x, _, _ in FLOAT_NOTATIONS]
    theirs = _node_stringify(floats)
    ours = [JSON.encode(x).decode() for x in floats]
    differing = {x for x, a, b in zip(floats, ours, theirs, strict=True) if a != b}
    assert differing == {x for x in floats if _float_differs(x)}
    # JSON.parse reads the same number from our bytes: Node writes it back as it writes its own.
    assert _node(_STRINGIFY_PARSED, ours) == theirs
    table = [(x, JSON.encode(x).decode()) for x, _, _ in FLOAT_NOTATIONS]
    assert table == [(x, mine) for x, mine, _ in FLOAT_NOTATIONS]
    javascript = [js for *_, js in FLOAT_NOTATIONS]
    assert _node_stringify([x for x, _, _ in FLOAT_NOTATIONS]) == javascript


def test_object_keys_keep_dict_order_where_javascript_lists_indices_first() -> None:
    """Array-index keys are the documented exception to identical key order."""
    value = {"b": 1, "123": 2, "45": 3, "-1": 4, "01": 5, "4294967295": 6, "4294967294": 7}
    ours = b'{"b":1,"123":2,"45":3,"-1":4,"01":5,"4294967295":6,"4294967294":7}'
    assert JSON.encode(value) == ours
    assert _node_stringify([value]) == [
        '{"45":3,"123":2,"4294967294":7,"b":1,"-1":4,"01":5,"4294967295":6}'
    ]


def test_what_json_parse_accepts_decodes_as_python_json_does() -> None:
    """Text JSON.stringify wrote (lone surrogates included) decodes like json.loads reads it."""
    texts = _node_stringify(WIRE_SAMPLES[:1] + WIRE_SAMPLES[-2:])
    texts += ["[1e400,-1e400]", '"\\uD83D"', " [ 1 , 2 ] "]
    for text in texts:
        for data in (text.encode(), text):
            assert JSON.decode(data) == json.loads(text)
    assert JSON.decode(b'"cut \\ud83d"') == "cut \ud83d"
    assert JSON.decode(b"[1e400]") == [math.inf]


def test_lone_surrogates_round_trip_to_the_bytes_javascript_wrote() -> None:
    """Decoding a GramIO value and encoding it again gives back JSON.stringify's bytes."""
    for text in _node_stringify(WIRE_SAMPLES[-2:]):
        assert JSON.encode(JSON.decode(text.encode())) == text.encode()


@dataclasses.dataclass
class Message:
    text: str
    parts: list[str]


class MessageStruct(msgspec.Struct):
    text: str
    parts: tuple[str, ...]


class MessageModel(pydantic.BaseModel):
    text: str
    parts: list[str]


@pytest.mark.parametrize("tp", [Message, MessageStruct, MessageModel])
def test_typed_decoding_of_lone_surrogates(tp: Any) -> None:
    """A dataclass, a Struct and a pydantic model all decode an escaped lone surrogate."""
    data = b'{"text":"hi \\ud83d","parts":["\\ude00","ok"]}'
    value = JSON.decode(data, tp)
    assert isinstance(value, tp)
    assert value.text == "hi \ud83d" and list(value.parts) == ["\ude00", "ok"]
    assert JSON.encode(value) == data


@pytest.mark.parametrize("tp", [Message, MessageStruct, MessageModel])
def test_lone_surrogate_value_of_the_wrong_shape_is_still_rejected(tp: Any) -> None:
    """The fallback parser validates like the fast path: a missing field still fails."""
    with pytest.raises((msgspec.ValidationError, pydantic.ValidationError)):
        JSON.decode(b'{"text":"hi \\ud83d"}', tp)


@pytest.mark.parametrize(
    "data", [b"NaN", b"[Infinity]", b'{"a":-Infinity}', b"{'a':1}", b'"\xed\xa0\xbd"', b"[1,]"]
)
def test_text_json_parse_refuses_stays_a_decode_error(data: bytes) -> None:
    """NaN, Infinity, single quotes, raw surrogate bytes: refused, with msgspec's error."""
    with pytest.raises(msgspec.DecodeError) as info:
        JSON.decode(data)
    assert not isinstance(info.value, msgspec.ValidationError)


def test_valid_json_never_reaches_the_fallback_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard-library parser runs only after msgspec refused the input."""
    encoded = [JSON.encode(v) for v in WIRE_SAMPLES[:-2]]
    expected = [json.loads(data) for data in encoded]
    calls: list[Any] = []
    monkeypatch.setattr(_codecs, "_parse_like_javascript", calls.append)
    assert [JSON.decode(data) for data in encoded] == expected
    assert JSON.decode(b'{"text":"x","parts":[]}', Message) == Message("x", [])
    assert calls == []
    JSON.decode(b'"\\ud83d"')
    assert calls == [b'"\\ud83d"']


def test_encoding_a_lone_surrogate_matches_msgspec_everywhere_else() -> None:
    """Only the surrogate is escaped: every other byte is what msgspec writes without it."""
    order = Order(uuid.UUID(int=3), date(2026, 1, 2), Role.ADMIN)
    value = {"order": order, "n": [2.0, 1e16, 2**64], "s": "é\n", 7: None, "cut": "🎉\ud83c"}
    plain = {**value, "cut": "🎉?"}
    assert JSON.encode(value) == JSON.encode(plain).replace(b"?", b"\\ud83c")
    assert JSON.encode(Settings(lang="\ud800")) == b'{"lang":"\\ud800","notify":true}'
    with pytest.raises(UnicodeEncodeError):
        MSGPACK.encode("\ud83d")  # msgpack has no escape for it: EncodeError in a storage


class Role(Enum):
    ADMIN = "admin"


class Movie(TypedDict):
    title: str
    year: int


class Settings(pydantic.BaseModel):
    lang: str
    notify: bool = True


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed: date
    role: Role


async def test_typed_dict_and_pydantic_and_rich_types_round_trip() -> None:
    """TypedDict, pydantic models, UUID, date and Enum fields decode into their types."""
    storage = MemoryStorage()
    order = Order(uuid.UUID(int=7), date(2026, 11, 25), Role.ADMIN)
    await storage.set(Key("movie", Movie), {"title": "Heat", "year": 1995})
    await storage.set(Key("settings", Settings), Settings(lang="ru"))
    await storage.set(Key("order", Order), order)
    assert await storage.get(Key("movie", Movie)) == {"title": "Heat", "year": 1995}
    assert await storage.get(Key("settings", Settings)) == Settings(lang="ru")
    assert await storage.get("settings") == {"lang": "ru", "notify": True}
    assert await storage.get(Key("order", Order)) == order
    assert await storage.get("order") == {
        "id": "00000000-0000-0000-0000-000000000007",
        "placed": "2026-11-25",
        "role": "admin",
    }


async def test_pydantic_validation_failure_is_a_decode_error() -> None:
    """A stored value a pydantic model rejects raises DecodeError naming the key."""
    storage = MemoryStorage()
    await storage.set("settings:1", {"notify": "maybe"})
    with pytest.raises(DecodeError, match="settings:1") as info:
        await storage.get(Key("settings:1", Settings))
    assert isinstance(info.value.__cause__, pydantic.ValidationError)


async def test_datetime_is_iso_8601() -> None:
    """Datetimes are stored as RFC 3339 text that JavaScript's Date parses."""
    storage = MemoryStorage({})
    when = datetime(2026, 11, 25, 12, 30, 5, tzinfo=UTC)
    await storage.set(Key("when", datetime), when)
    assert await storage.get("when") == "2026-11-25T12:30:05Z"
    assert await storage.get(Key("when", datetime)) == when


def test_msgpack_round_trips_typed_values() -> None:
    """The msgpack codec decodes into types too."""
    data = MSGPACK.encode(Order(uuid.UUID(int=1), date(2026, 1, 1), Role.ADMIN))
    assert MSGPACK.decode(data, Order).role is Role.ADMIN
    with pytest.raises(msgspec.ValidationError):
        MSGPACK.decode(MSGPACK.encode({"x": 1}), Order)


class UpperCodec:
    """A custom codec: anything with encode/decode is one."""

    def encode(self, value: Any) -> bytes:
        return json.dumps(value).upper().encode()

    def decode(self, data: bytes, type: Any = Any) -> Any:
        return json.loads(data.decode().lower())


async def test_custom_codec_is_used_for_every_operation() -> None:
    """A user codec satisfies the Codec protocol and sees every value."""
    codec = UpperCodec()
    assert isinstance(codec, Codec)
    mapping: dict[str, Any] = {}
    storage = MemoryStorage(mapping, codec=codec)
    await storage.set("k", {"a": "b"})
    assert mapping["k"] == b'{"A": "B"}'
    assert await storage.get("k") == {"a": "b"}
    assert await storage.incr("n") == 1
    assert await storage.update("k", lambda v: {**v, "c": 1}) == {"a": "b", "c": 1}


def test_no_pickle_anywhere_in_the_package() -> None:
    """Neither pickle nor marshal is imported by any module of the package."""
    from pathlib import Path

    import gramio_storage

    root = Path(gramio_storage.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if any(
            line.strip().startswith(
                ("import pickle", "from pickle", "import marshal", "import dill")
            )
            for line in p.read_text().splitlines()
        )
    ]
    assert offenders == []


# ---------------------------------------------------------------------- every backend


@dataclasses.dataclass
class Cut:
    text: str
    n: list[float]


class RawBytes:
    """A codec that hands bytes through: what a GramIO bot (or redis-cli) puts in the store."""

    def encode(self, value: Any) -> bytes:
        return bytes(value)

    def decode(self, data: bytes, type: Any = Any) -> bytes:
        return bytes(data)


def _pair(backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> tuple[Any, Any]:
    """Two storages on one store: the default JSON codec, and raw bytes."""
    from gramio_storage import storage_from_url

    if backend == "memory":
        shared: dict[str, Any] = {}
        return MemoryStorage(shared), MemoryStorage(shared, codec=RawBytes())
    if backend == "cloudflare":
        kv: KVEmulator = request.getfixturevalue("cloudflare_kv")
        return kv.storage(), kv.storage(codec=RawBytes())
    url = {
        "sqlite": lambda: f"sqlite:///{tmp_path / 'codecs.db'}",
        "redis": lambda: request.getfixturevalue("redis_url"),
        "postgres": lambda: request.getfixturevalue("postgres_dsn"),
    }[backend]()
    return storage_from_url(url), storage_from_url(url, codec=RawBytes())


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis", "postgres", "cloudflare"])
async def test_every_backend_keeps_a_javascript_lone_surrogate(
    backend: str, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    """A value a GramIO bot wrote with a cut emoji reads in Python and goes back unchanged."""
    written_by_javascript = _node_stringify([{"text": "hi \ud83d", "n": [1, 2.5]}])[0].encode()
    assert b"\\ud83d" in written_by_javascript
    key = f"codecs:surrogate:{uuid.uuid4().hex}"
    storage, raw = _pair(backend, request, tmp_path)
    try:
        await raw.set(key, written_by_javascript)
        assert await storage.get(key) == {"text": "hi \ud83d", "n": [1, 2.5]}
        assert await storage.get(Key(key, Cut)) == Cut("hi \ud83d", [1.0, 2.5])
        assert await storage.get_many([key]) == {key: {"text": "hi \ud83d", "n": [1, 2.5]}}
        if storage.capabilities.atomic_ops:
            await storage.update(key, lambda v: {**v, "n": [*v["n"], 3]})
        else:  # Cloudflare KV: a plain read-modify-write
            value = await storage.get(key)
            await storage.set(key, {**value, "n": [*value["n"], 3]})
        assert await raw.get(key) == b'{"text":"hi \\ud83d","n":[1,2.5,3]}'
        await storage.delete(key)
    finally:
        await storage.close()
        await raw.close()


async def test_a_whole_float_reads_back_as_documented(tmp_path: Any) -> None:
    """2.0 stays 2.0 in Python; JavaScript reads 2; GramIO's JSONB column stores a bare 2."""
    assert _node(
        "const v=JSON.parse('2.0'); console.log(JSON.stringify([v, Number.isInteger(v)]))", []
    ) == ["[2,true]"]
    assert JSON.decode(b"2").__class__ is int  # what Python reads after a GramIO bot rewrote it
    from gramio_storage import storage_from_url

    gramio_made = tmp_path / "gramio.db"
    with sqlite3.connect(gramio_made) as db:  # the table as @gramio/storage-sqlite creates it
        db.execute(
            "CREATE TABLE gramio_storage "
            "(key TEXT PRIMARY KEY, value JSONB NOT NULL, expires_at BIGINT)"
        )
    db.close()
    for url, bare in [
        ("memory://", 2.0),
        (f"sqlite:///{tmp_path / 'own.db'}", 2.0),
        (f"sqlite:///{gramio_made}", 2),
    ]:
        storage = storage_from_url(url)
        try:
            await storage.set("n", 2.0)
            await storage.set("nested", {"n": 2.0})
            got = await storage.get("n")
            assert (got, got.__class__) == (bare, bare.__class__), url
            assert (await storage.get(Key("n", float))).__class__ is float
            assert (await storage.get("nested"))["n"].__class__ is float
        finally:
            await storage.close()
