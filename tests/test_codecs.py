"""Codecs: GramIO wire compatibility, typed decoding, custom codecs, no pickle."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import uuid
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any, TypedDict

import msgspec
import pydantic
import pytest

from gramio_storage import JSON, MSGPACK, Codec, DecodeError, Key, MemoryStorage

# Values a bot stores. For these, JSON.stringify (run by Node itself) and our codec must agree
# byte for byte.
WIRE_SAMPLES: list[Any] = [
    {"step": "ask_age", "name": "Alice", "age": 30},
    {"nested": {"list": [1, 2.5, -3, None, True, False]}, "empty": {}, "arr": []},
    "Привет, 世界 🎉",
    'quotes " and \\ backslash / slash',
    "control \x01 \t \n chars",
    [0.1, -0.5, 123456789012345, 2**53, 1.5e-7],
]
# Exponents print differently (JS: 1e+21, msgspec: 1e21) but parse to the same number everywhere.
VALUE_SAMPLES: list[Any] = [[1e21, -2.5e300]]


def _node_stringify(values: list[Any]) -> list[str]:
    node = shutil.which("node")
    assert node is not None, "Node.js is required for the GramIO wire-compatibility test"
    script = (
        "const lines=require('fs').readFileSync(0,'utf8').split('\\n').filter(Boolean);"
        "for (const l of lines) console.log(JSON.stringify(JSON.parse(l)));"
    )
    payload = "\n".join(json.dumps(v) for v in values) + "\n"
    result = subprocess.run(
        [node, "-e", script], input=payload.encode(), capture_output=True, check=True
    )
    return result.stdout.decode().splitlines()


def test_json_bytes_equal_javascript_json_stringify() -> None:
    """The default codec writes the exact bytes a GramIO (Node) bot writes for the same data."""
    assert [JSON.encode(v).decode() for v in WIRE_SAMPLES] == _node_stringify(WIRE_SAMPLES)
    for ours, theirs in zip(
        [JSON.encode(v) for v in VALUE_SAMPLES], _node_stringify(VALUE_SAMPLES), strict=True
    ):
        assert json.loads(ours) == json.loads(theirs)


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
