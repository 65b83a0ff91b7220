"""Redaction and JSON-safety of recorded values: secrets never reach the log, odd values never crash it.

A key whose name matches a redaction pattern (a case-insensitive glob such as ``*password*``),
at any depth of a mapping, has its whole value replaced by ``"[REDACTED]"`` before the record is
serialized or hashed; the dotted paths of what was redacted are recorded, never the values. Keys
are matched after NFKC normalization, with invisible format characters (Unicode category Cf, and
the other default-ignorable code points) removed, case-folded: ``ｐａｓｓｗｏｒｄ`` and
``pass\u200bword`` match ``*password*``. A bytes key is matched on its UTF-8 text.

Values JSON cannot hold are written in a fixed, documented way: non-finite floats as the strings
``"NaN"``, ``"Infinity"``, ``"-Infinity"``; integers beyond 64 bits as decimal strings; tuples
and sets as lists; named tuples, dataclasses, structured numpy rows and other mappings as objects
(redacted like dicts); non-string keys through ``str()`` (a key that then equals an earlier key
gets the suffix ``~2``, ``~3``, ...); bytes as ``"<N bytes>"``; a container inside itself as
``"<cycle>"``; any other object as ``"<TypeName>"`` (never its ``repr``, which may hold a secret
that redaction cannot see).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import fnmatch
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import orjson

from rlguard.engine.context import IGNORABLE
from rlguard.evidence.chain import CANONICAL
from rlguard.evidence.errors import EvidenceError

#: What a redacted value is replaced with.
REDACTED = "[REDACTED]"
#: Patterns used when the recorder is given none. Pass ``redact=()`` to record everything.
DEFAULT_REDACT: tuple[str, ...] = (
    "*password*",
    "*passwd*",
    "*secret*",
    "*token",
    "*api_key*",
    "*api-key*",
    "*apikey*",
    "authorization",
    "cookie",
    "*credential*",
    "*private_key*",
    "card_number",
    "cvv",
    "ssn",
)

_MAX_DEPTH = 64
_CACHE_LIMIT = 4096
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1
_NUMPY_KINDS = frozenset("biuf")
#: Value classes that orjson writes exactly as `Redactor.clean` would (floats need a finiteness check).
_PLAIN = frozenset((str, int, bool, type(None)))
_dumps = orjson.dumps
CYCLE = "<cycle>"


def fold_key(key: str) -> str:
    """The form of `key` that patterns are matched against: NFKC, invisible characters removed, casefolded.

    >>> fold_key("ＡＰＩ\u2060_Key")
    'api_key'
    """
    if key.isascii():
        return key.casefold()
    text = unicodedata.normalize("NFKC", key)
    # (default-ignorable code points render as nothing, as the engine reads them in tool names)
    text = IGNORABLE.sub("", "".join(ch for ch in text if unicodedata.category(ch) != "Cf"))
    # Casefolding can produce characters NFKC changes again (over-redacting is the safe direction).
    return unicodedata.normalize("NFKC", text.casefold())


def _key_text(key: Any) -> str | None:
    """The text a non-str key is matched on (bytes as UTF-8), or None."""
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).decode("utf-8", "replace")
    if isinstance(key, memoryview):
        return key.tobytes().decode("utf-8", "replace")
    return None


def check_patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    """Validate redaction patterns; raises `TypeError` / `ValueError` with a help line."""
    if isinstance(patterns, (str, bytes)):
        raise TypeError(
            f"`redact` must be a sequence of patterns, got the string `{patterns!r}`\n"
            f"help: write `redact=({patterns!r},)`"
        )
    out: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(
                f"redaction pattern `{pattern!r}` is not a non-empty string\n"
                "help: write key globs such as `*password*` or `card_number`"
            )
        out.append(pattern)
    return tuple(out)


class Redactor:
    """Redacts keys that match `patterns` and makes values JSON-safe, then serializes them.

    >>> r = Redactor(("*password*",))
    >>> paths: list[str] = []
    >>> r.dump({"user": "ann", "db": {"Password": "hunter2"}}, "args", paths)
    b'{"db":{"Password":"[REDACTED]"},"user":"ann"}'
    >>> paths
    ['args.db.Password']
    """

    __slots__ = ("_fields", "_plain_keys", "_regex", "_secret", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = check_patterns(patterns)
        self._secret: dict[str, bool] = {}
        self._plain_keys: set[str] = set()  # str keys known not to match (a fast `in` for `dump_mapping`)
        self._fields: dict[str, bool] = {}
        if self.patterns:
            alternatives = "|".join(fnmatch.translate(fold_key(p)) for p in self.patterns)
            self._regex: re.Pattern[str] | None = re.compile(f"(?:{alternatives})")
        else:
            self._regex = None

    def is_secret(self, key: str) -> bool:
        """Whether `key` matches a redaction pattern (case-insensitive, after `fold_key`)."""
        hit = self._secret.get(key)
        if hit is None:
            hit = self._regex is not None and self._regex.match(fold_key(key)) is not None
            if len(self._secret) >= _CACHE_LIMIT:
                self._secret.clear()
                self._plain_keys.clear()
            self._secret[key] = hit
            if not hit and key.__class__ is str:
                self._plain_keys.add(key)
        return hit

    def is_secret_field(self, name: str) -> bool:
        """Whether a batch field (``args.auth.token``) is redacted: a segment after its root matches."""
        hit = self._fields.get(name)
        if hit is None:
            hit = any(self.is_secret(part) for part in name.split(".")[1:] or [name])
            if not hit and not name.isascii():  # a fullwidth full stop folds to "." too
                hit = any(self.is_secret(part) for part in fold_key(name).split(".")[1:])
            if len(self._fields) >= _CACHE_LIMIT:
                self._fields.clear()
            self._fields[name] = hit
        return hit

    # -- serialization ---------------------------------------------------------------------
    def dump(self, value: Any, path: str, redacted: list[str]) -> bytes:
        """Canonical JSON bytes of `value` after redaction; redacted paths are appended to `redacted`."""
        if self._is_clean(value, 0):
            try:
                return orjson.dumps(value, option=CANONICAL)
            except TypeError:  # e.g. an int beyond 64 bits: take the slow path
                pass
        return self._dump_slow(value, path, redacted)

    def dump_mapping(self, value: Any, path: str, redacted: list[str]) -> bytes:
        """`dump` for a mapping (the record hot path: args, tool_meta, context)."""
        if value.__class__ is dict:
            # The common case first: a flat dict of plain values under keys already seen.
            known = self._plain_keys
            for key, item in value.items():
                cls = item.__class__
                if key not in known or (cls not in _PLAIN and (cls is not float or item - item != 0.0)):
                    break
            else:
                try:
                    return _dumps(value, option=CANONICAL)  # a str subclass key or a huge int raise
                except TypeError:
                    pass
        if value.__class__ is dict and self._is_clean_dict(value, 0):
            try:
                return orjson.dumps(value, option=CANONICAL)
            except TypeError:
                pass
        return self._dump_slow(value, path, redacted)

    def _dump_slow(self, value: Any, path: str, redacted: list[str]) -> bytes:
        try:
            return orjson.dumps(self.clean(value, path, redacted), option=CANONICAL)
        except EvidenceError:
            raise
        except Exception as exc:  # a value that breaks while read (a raising property, ...): record nothing
            raise EvidenceError(
                f"cannot serialize `{path}`: {type(exc).__name__}: {exc}; the record was not written and the action "
                "must not run\nhelp: pass plain values (dicts, lists, str, numbers) in the action context"
            ) from exc

    def _is_clean(self, value: Any, depth: int) -> bool:
        # The fast path: plain JSON values and no secret key. Allocates nothing.
        cls = value.__class__
        if cls is dict:
            return self._is_clean_dict(value, depth)
        if cls is str or cls is int or cls is bool or value is None:
            return True
        if cls is float:
            return bool(value - value == 0.0)  # False for NaN and ±inf
        if cls is list and depth < _MAX_DEPTH:
            return all(self._is_clean(item, depth + 1) for item in value)
        return False

    def _is_clean_dict(self, value: dict[Any, Any], depth: int) -> bool:
        if depth >= _MAX_DEPTH:
            return False
        secret = self._secret
        for key, item in value.items():
            if secret.get(key) is not False and (key.__class__ is not str or self.is_secret(key)):
                return False
            cls = item.__class__
            if cls is str or cls is int or cls is bool or item is None:
                continue
            if cls is float:
                if item - item != 0.0:
                    return False
            elif cls is dict:
                if not self._is_clean_dict(item, depth + 1):
                    return False
            elif cls is not list or not self._is_clean(item, depth):
                return False
        return True

    def clean(self, value: Any, path: str, redacted: list[str], depth: int = 0) -> Any:
        """A JSON-safe copy of `value` with secret keys redacted (the slow path of `dump`)."""
        return self._clean(value, path, redacted, depth, set())

    def _clean(self, value: Any, path: str, redacted: list[str], depth: int, active: set[int]) -> Any:
        # `active`: ids of the containers on the path from the root to `value` (a cycle is cut there;
        # shared but acyclic references are written in full at each place).
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return value if value.__class__ is str else str.__str__(value)
        if isinstance(value, enum.Enum):
            return self._clean(value.value, path, redacted, depth + 1, active) if depth < _MAX_DEPTH \
                else "<nested too deep>"
        if isinstance(value, int):
            value = int(value)
            return value if _INT_MIN <= value <= _INT_MAX else str(value)
        if isinstance(value, float):
            return _float(float(value))
        if depth >= _MAX_DEPTH:
            return "<nested too deep>"
        if isinstance(value, (bytes, bytearray, memoryview)):
            return f"<{len(value)} bytes>"
        if isinstance(value, np.ndarray) and value.dtype.names is None:
            if (value.dtype.kind in _NUMPY_KINDS and not np.issubdtype(value.dtype, np.floating)
                    and value.ndim and value.flags.c_contiguous and value.dtype.isnative):
                return value  # what orjson serializes itself (OPT_SERIALIZE_NUMPY)
            return self._clean(value.tolist(), path, redacted, depth, active)
        if isinstance(value, np.generic) and not isinstance(value, np.void):
            return self._clean(value.item(), path, redacted, depth, active)
        if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
            return value.isoformat()
        if isinstance(value, uuid.UUID):
            return str(value)
        key = id(value)
        if key in active:
            return CYCLE
        active.add(key)
        try:
            return self._clean_container(value, path, redacted, depth, active)
        finally:
            active.discard(key)

    def _clean_container(self, value: Any, path: str, redacted: list[str], depth: int, active: set[int]) -> Any:
        if isinstance(value, Mapping):
            return self._clean_mapping(value.items(), path, redacted, depth, active)
        if isinstance(value, tuple) and hasattr(type(value), "_fields"):  # a named tuple: its fields by name
            names = getattr(type(value), "_fields", ())
            if isinstance(names, tuple) and len(names) == len(value):
                return self._clean_mapping(zip(names, value, strict=True), path, redacted, depth, active)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            items = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
            return self._clean_mapping(items, path, redacted, depth, active)
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self._clean(item, f"{path}.{i}", redacted, depth + 1, active) for i, item in enumerate(value)]
        if isinstance(value, np.ndarray):  # structured: each row an object keyed by the field names
            if value.ndim == 0:
                return self._clean(value[()], path, redacted, depth, active)
            return [self._clean(row, f"{path}.{i}", redacted, depth + 1, active) for i, row in enumerate(value)]
        if isinstance(value, np.void):
            names = value.dtype.names
            if names is None:
                return f"<{value.dtype.itemsize} bytes>"
            return self._clean_mapping(((name, value[name]) for name in names), path, redacted, depth, active)
        return f"<{type(value).__qualname__}>"

    def _clean_mapping(
        self, items: Iterable[tuple[Any, Any]], path: str, redacted: list[str], depth: int, active: set[int]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        pairs = items if isinstance(items, list) else list(items)
        # String keys keep their names; a converted key that equals one (1 and "1") gets a suffix.
        taken = {key for key, _ in pairs if key.__class__ is str}
        for key, item in pairs:
            if key.__class__ is str:
                name = key
                secret = self.is_secret(key)
            else:
                name = self._clean(key, path, [], depth + 1, active)
                if not isinstance(name, str):
                    name = orjson.dumps(name, option=CANONICAL).decode() if name is not None else "null"
                text = _key_text(key)
                secret = self.is_secret(name) or (text is not None and self.is_secret(text))
                if name in taken or name in out:
                    n = 2
                    while f"{name}~{n}" in taken or f"{name}~{n}" in out:
                        n += 1
                    name = f"{name}~{n}"
                taken.add(name)
            child = f"{path}.{name}"
            if secret:
                out[name] = REDACTED
                redacted.append(child)
            else:
                out[name] = self._clean(item, child, redacted, depth + 1, active)
        return out


def _float(value: float) -> float | str:
    if value - value == 0.0:
        return value
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"
