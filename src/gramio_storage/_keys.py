"""Typed keys: a key name (or template) bound to the type its value decodes into."""

from __future__ import annotations

import builtins
import string
from typing import Any, Generic, TypeVar, overload

from ._errors import InvalidKeyError

__all__ = ["Key"]

T = TypeVar("T")

_FORMATTER = string.Formatter()


class Key(Generic[T]):
    """A storage key that knows the type of its value.

    The static type flows to :meth:`Storage.get <gramio_storage.BaseStorage.get>` and
    ``set``, and at run time the stored bytes are decoded into that type (a dataclass,
    ``msgspec.Struct``, ``TypedDict``, builtins, ``datetime``, a pydantic model...)::

        USER = Key("user:{id}", User)
        await storage.set(USER.format(id=1), User(name="Alice"))
        user = await storage.get(USER.format(id=1))   # User | None

    A key whose name has ``{fields}`` is a template: fill it with :meth:`format` before use.
    Keys are immutable and hashable, so they can be module-level constants and dict keys.

    Args:
        name: The key, or a template in :meth:`str.format` syntax.
        type: The value's type. Omitted means ``Any``: plain JSON values, as with ``str`` keys.
    """

    __slots__ = ("_fields", "name", "type")

    name: str
    type: Any
    _fields: tuple[str, ...]

    @overload
    # `builtins.type`: a bare `type` here would resolve to the class attribute below.
    def __init__(self: Key[T], name: str, type: builtins.type[T]) -> None: ...
    @overload
    def __init__(self: Key[Any], name: str, type: Any = ...) -> None: ...
    def __init__(self, name: str, type: Any = Any) -> None:
        if not isinstance(name, str):
            raise InvalidKeyError(f"Key name must be a str, got {name.__class__.__name__}")
        try:
            fields = tuple(f for _, f, _, _ in _FORMATTER.parse(name) if f is not None)
        except ValueError as e:
            raise InvalidKeyError(f"Invalid key template {name!r}: {e}", key=name) from e
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "_fields", fields)

    @property
    def is_template(self) -> bool:
        """Whether the name still has ``{fields}`` to fill with :meth:`format`."""
        return bool(self._fields)

    def format(self, *args: object, **kwargs: object) -> Key[T]:
        """Fill the template's fields and return a concrete key of the same type.

        Raises:
            InvalidKeyError: A field is missing.
        """
        try:
            name = self.name.format(*args, **kwargs)
        except (KeyError, IndexError) as e:
            raise InvalidKeyError(
                f"Key template {self.name!r} needs field {e.args[0]!r}", key=self.name
            ) from e
        # The filled name is used verbatim: braces inside field values are data, not fields.
        key: Key[T] = Key.__new__(Key)
        object.__setattr__(key, "name", name)
        object.__setattr__(key, "type", self.type)
        object.__setattr__(key, "_fields", ())
        return key

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Key is immutable")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Key:
            return NotImplemented
        assert isinstance(other, Key)  # narrowing for mypy; the class check above decides
        return self.name == other.name and self.type == other.type

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        tp = getattr(self.type, "__qualname__", None) or repr(self.type)
        return f"Key({self.name!r}, {tp})"

    def __copy__(self) -> Key[T]:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, Any]) -> Key[T]:
        return self
