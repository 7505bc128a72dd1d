"""A small declarative validator for JSON documents read from untrusted files.

Model headers (:mod:`attribution.persistence`) and saved ranking results
(:mod:`attribution.report`) are described by tables of specs, so that a new field is
one line and nothing unlisted gets through::

    PARAMS = Obj({"C": Num(min=0, min_exclusive=True, max=1e6), "normalize": Bool()})
    PARAMS.check({"C": 1.0, "normalize": True}, "params")   # raises SchemaError otherwise

A spec's :meth:`~Spec.check` raises :class:`SchemaError` naming the path of the first
problem (``tasks[0].params.C: must be ...``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any


class SchemaError(ValueError):
    """A document does not match its schema; ``str()`` names the path and the problem."""


def _fail(path: str, expected: str, value: Any) -> SchemaError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return SchemaError(f"{path}: must be {expected} (got {shown})")


class Spec:
    """Base class: :meth:`check` returns nothing or raises :class:`SchemaError`."""

    expected = "a value"

    def ok(self, value: Any) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def check(self, value: Any, path: str = "$") -> None:
        if not self.ok(value):
            raise _fail(path, self.expected, value)


class Anything(Spec):
    """Any value (checked elsewhere, e.g. by a spec chosen from a sibling field)."""

    def ok(self, value: Any) -> bool:
        return True


class Bool(Spec):
    expected = "true or false"

    def ok(self, value: Any) -> bool:
        return isinstance(value, bool)


class Int(Spec):
    """An integer (not a boolean) in ``[min, max]``."""

    def __init__(self, min: int | None = None, max: int | None = None) -> None:
        self.min, self.max = min, max
        self.expected = f"an integer in [{min if min is not None else '-inf'}, {max if max is not None else 'inf'}]"

    def ok(self, value: Any) -> bool:
        return (isinstance(value, int) and not isinstance(value, bool)
                and (self.min is None or value >= self.min) and (self.max is None or value <= self.max))


class Num(Spec):
    """A finite number (int or float, not a boolean) in ``[min, max]`` (``(min, max]`` with ``min_exclusive``)."""

    def __init__(self, min: float | None = None, max: float | None = None, *, min_exclusive: bool = False) -> None:
        self.min, self.max, self.min_exclusive = min, max, min_exclusive
        low = "(" if min_exclusive else "["
        self.expected = (f"a finite number in {low}{min if min is not None else '-inf'}, "
                         f"{max if max is not None else 'inf'}]")

    def ok(self, value: Any) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.min is not None and (value <= self.min if self.min_exclusive else value < self.min):
            return False
        return self.max is None or value <= self.max


class Str(Spec):
    """A string of at most ``max_len`` characters, optionally matching ``pattern`` (full match)."""

    def __init__(self, max_len: int = 10_000, pattern: str | None = None) -> None:
        self.max_len = max_len
        self.pattern = re.compile(pattern) if pattern else None
        self.expected = f"a string of at most {max_len} characters" + (
            f" matching {pattern}" if pattern else "")

    def ok(self, value: Any) -> bool:
        return (isinstance(value, str) and len(value) <= self.max_len
                and (self.pattern is None or self.pattern.fullmatch(value) is not None))


class Enum(Spec):
    """One of a fixed set of JSON values (``None`` allowed when listed)."""

    def __init__(self, *values: Any) -> None:
        self.values = values
        self.expected = "one of " + ", ".join(repr(v) for v in values)

    def ok(self, value: Any) -> bool:
        # type-exact: True must not pass for 1, nor 1.0 for 1
        return any(type(value) is type(v) and value == v for v in self.values)


class OneOf(Spec):
    """A string in ``choices``, read when checked (a registry: plugins installed later count), or
    matching ``pattern``; at most ``max_len`` characters."""

    def __init__(self, choices: Collection[str], *, pattern: str | None = None, max_len: int = 100) -> None:
        self.choices = choices
        self.pattern = re.compile(pattern) if pattern else None
        self.max_len = max_len

    @property
    def expected(self) -> str:  # type: ignore[override]
        names = "one of " + ", ".join(repr(v) for v in self.choices)
        return names + (f" or a string matching {self.pattern.pattern}" if self.pattern else "")

    def ok(self, value: Any) -> bool:
        return (isinstance(value, str) and len(value) <= self.max_len
                and (value in self.choices or (self.pattern is not None and self.pattern.fullmatch(value) is not None)))


class Opt(Spec):
    """``None`` or ``spec``."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.expected = f"null or {spec.expected}"

    def check(self, value: Any, path: str = "$") -> None:
        if value is not None:
            self.spec.check(value, path)


class List(Spec):
    """A list of ``min_len`` to ``max_len`` items, each matching ``item``."""

    def __init__(self, item: Spec, min_len: int = 0, max_len: int = 1_000_000, *, unique: bool = False) -> None:
        self.item, self.min_len, self.max_len, self.unique = item, min_len, max_len, unique
        self.expected = f"a list of {min_len} to {max_len}{' distinct' if unique else ''} items"

    def check(self, value: Any, path: str = "$") -> None:
        if not isinstance(value, list) or not self.min_len <= len(value) <= self.max_len:
            raise _fail(path, self.expected, value)
        for i, item in enumerate(value):
            self.item.check(item, f"{path}[{i}]")
        if self.unique and len({repr(v) for v in value}) != len(value):
            raise _fail(path, self.expected, value)


class Obj(Spec):
    """A JSON object with exactly the keys of ``fields`` (minus ``optional`` ones that are absent).

    Unknown keys are refused unless ``extra`` is a spec for their values.
    """

    def __init__(self, fields: Mapping[str, Spec], *, optional: tuple[str, ...] = (),
                 extra: Spec | None = None) -> None:
        self.fields, self.optional, self.extra = dict(fields), set(optional), extra
        self.expected = "a JSON object"

    def check(self, value: Any, path: str = "$") -> None:
        if not isinstance(value, dict):
            raise _fail(path, self.expected, value)
        for key in value:
            if key not in self.fields and self.extra is None:
                raise SchemaError(f"{path}: unknown key {str(key)[:60]!r}")
        for key, spec in self.fields.items():
            if key in value:
                spec.check(value[key], f"{path}.{key}")
            elif key not in self.optional:
                raise SchemaError(f"{path}: missing key {key!r}")
        if self.extra is not None:
            for key, item in value.items():
                if key not in self.fields:
                    self.extra.check(item, f"{path}.{key}")


class Map(Spec):
    """A JSON object with free keys (matching ``key``) and values matching ``value``."""

    def __init__(self, value: Spec, key: Str | None = None, max_len: int = 100_000) -> None:
        self.value, self.key, self.max_len = value, key or Str(1_000), max_len
        self.expected = f"a JSON object of at most {max_len} entries"

    def check(self, value: Any, path: str = "$") -> None:
        if not isinstance(value, dict) or len(value) > self.max_len:
            raise _fail(path, self.expected, value)
        for key, item in value.items():
            self.key.check(key, f"{path} key")
            self.value.check(item, f"{path}.{key}")


__all__ = ["Anything", "Bool", "Enum", "Int", "List", "Map", "Num", "Obj", "Opt", "SchemaError", "Spec", "Str"]
