"""Canonical bytes, hashes and the hash chain that make an evidence log tamper-evident.

Every record is a JSON object. Its *canonical bytes* are ``orjson.dumps(record_without_hash,
option=OPT_SORT_KEYS)``: compact, keys sorted at every depth, UTF-8. Its ``hash`` is the
lowercase hex sha256 of those bytes, and each record's ``prev`` is the ``hash`` of the record
before it (`GENESIS` for the first). On disk a record is its canonical bytes with the hash member
appended last, then a newline::

    {"kind":"header",...,"ts":"..."}  ->  {"kind":"header",...,"ts":"...","hash":"<64 hex>"}\\n

so the hashed bytes are recovered exactly by cutting the final ``,"hash":"..."`` member
(`split_sealed`), with no re-serialization.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

#: The evidence format version written in every header record.
FORMAT_VERSION = 1
#: ``prev`` of the first record of a log.
GENESIS = "0" * 64
#: orjson options that define canonical bytes (numpy arrays allowed: they serialize as lists).
CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY

_HASH_KEY = b',"hash":"'
_sha256 = hashlib.sha256
_SEAL_LEN = len(_HASH_KEY) + 64 + 2  # ,"hash":"<64 hex>"}


def canonical(record: dict[str, Any]) -> bytes:
    """The canonical bytes of `record` (its ``hash`` member, if any, left out)."""
    if "hash" in record:
        record = {k: v for k, v in record.items() if k != "hash"}
    return orjson.dumps(record, option=CANONICAL)


def digest(data: bytes) -> str:
    """Lowercase hex sha256."""
    return hashlib.sha256(data).hexdigest()


def seal(body: bytes) -> tuple[bytes, str]:
    """The line to write for canonical `body` (ending in ``}``) and its hash."""
    hex_ = _sha256(body).hexdigest()
    return b"".join((memoryview(body)[:-1], _HASH_KEY, hex_.encode(), b'"}\n')), hex_


def split_sealed(line: bytes) -> tuple[bytes, str] | None:
    """The hashed bytes and the stated hash of a line written by `seal` (no newline).

    None when the line does not end with a ``,"hash":"<64 hex>"}`` member.
    """
    if len(line) < _SEAL_LEN + 2 or not line.endswith(b'"}'):
        return None
    start = len(line) - _SEAL_LEN
    if line[start : start + len(_HASH_KEY)] != _HASH_KEY:
        return None
    return line[:start] + b"}", line[start + len(_HASH_KEY) : -2].decode("ascii", "replace")


def line_hash(line: bytes, record: dict[str, Any]) -> str | None:
    """The hash a parsed line *should* carry: over its sealed body, else over its canonical form.

    The fallback lets a log that another tool re-serialized with sorted keys (``hash`` in its
    sorted place) verify, and only a line that is exactly that serialization: a line that parses
    to the same record but reads otherwise (a duplicate key, which parsers resolve differently,
    other whitespace or spellings) gets None, which matches no hash.
    """
    parts = split_sealed(line)
    if parts is not None:
        return digest(parts[0])
    if orjson.dumps(record, option=CANONICAL) != line:
        return None
    return digest(canonical(record))
