"""Safe YAML reading for policies: plain data plus the source position of every key and value.

On top of ``yaml.safe_load``: duplicate keys are errors, no tags, aliases are counted so a
billion-laughs document cannot expand, files over 1 MiB and deeply nested text are refused
before the parser sees them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from rlguard.engine.errors import PolicyError, Problem

MAX_POLICY_BYTES = 1 << 20
MAX_NESTING = 64
MAX_NODES = 200_000

Path = tuple[Any, ...]

_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:timestamp",
}


@dataclass
class SourceMap:
    """1-based (line, column) of values and keys, by path from the document root."""

    file: str | None
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path, *, key: bool = False) -> tuple[int | None, int | None]:
        """The closest known position for `path` (falls back to its parents)."""
        table = self.keys if key else self.values
        p = tuple(path)
        while True:
            if p in table:
                return table[p]
            if key and p in self.values:
                return self.values[p]
            if not p:
                return (None, None)
            p = p[:-1]


def _scan_nesting(text: str, file: str | None) -> None:
    """Refuse flow nesting deeper than MAX_NESTING and absurd indentation, without parsing."""
    depth = 0
    line = 1
    col = 0
    quote: str | None = None
    in_comment = False
    line_start = True
    indent = 0
    for ch in text:
        col += 1
        if ch == "\n":
            line += 1
            col = 0
            in_comment = False
            line_start = True
            indent = 0
            if quote == "'" or quote == '"':
                continue
            continue
        if line_start:
            if ch == " ":
                indent += 1
                if indent > 4 * MAX_NESTING:
                    raise PolicyError.single(
                        f"indentation deeper than {4 * MAX_NESTING} columns",
                        file=file, line=line, column=col, code="too_deep",
                        hint="a policy is a few levels deep; flatten the structure",
                    )
                continue
            line_start = False
        if in_comment:
            continue
        if quote is not None:
            if ch == quote:
                quote = None
            continue
        if ch == "#":
            in_comment = True
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                raise PolicyError.single(
                    f"nesting deeper than {MAX_NESTING} levels",
                    file=file, line=line, column=col, code="too_deep",
                    hint="a policy is a few levels deep; flatten the structure",
                )
        elif ch in "]}":
            depth = max(0, depth - 1)


class _Converter:
    def __init__(self, file: str | None) -> None:
        self.file = file
        self.source = SourceMap(file)
        self.nodes = 0
        self.constructor = SafeConstructor()

    def fail(self, message: str, node: yaml.Node, hint: str | None = None, code: str = "yaml") -> PolicyError:
        mark = node.start_mark
        return PolicyError.single(
            message, file=self.file, line=mark.line + 1, column=mark.column + 1, hint=hint, code=code
        )

    def scalar(self, node: yaml.Node) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            raise
        except (ValueError, KeyError, IndexError, TypeError, OverflowError):
            # e.g. `!!int abc`, `!!bool maybe`, an integer of thousands of digits
            raise self.fail(
                f"invalid value `{str(node.value)[:40]}` for its type", node,
                "quote it to make it a string, or write a plain number or `true` / `false`", code="yaml",
            ) from None

    def convert(self, node: yaml.Node, path: Path, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(
                f"document expands to more than {MAX_NODES} nodes", node,
                "remove the anchors and aliases that repeat large structures", code="too_large",
            )
        if depth > MAX_NESTING:
            raise self.fail(f"nesting deeper than {MAX_NESTING} levels", node, code="too_deep")
        if node.tag not in _PLAIN_TAGS:
            raise self.fail(
                f"YAML tag `{node.tag}` is not allowed in a policy", node,
                "remove the tag; policies are plain data (strings, numbers, booleans, lists, mappings)",
                code="yaml_tag",
            )
        self.source.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            if node.tag == "tag:yaml.org,2002:timestamp":
                return node.value
            return self.scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    raise self.fail(
                        "mapping keys must be plain strings", key_node,
                        "write the key as a plain word, e.g. `tool:`", code="yaml_key",
                    )
                key = self.scalar(key_node)
                if not isinstance(key, str):
                    key = str(key_node.value)
                key_path = (*path, key)
                if key in result:
                    first = self.source.keys.get(key_path)
                    where = f" (first at line {first[0]})" if first else ""
                    raise self.fail(
                        f"duplicate key `{key}`{where}", key_node,
                        "each key may appear once in a mapping; remove or merge the duplicate",
                        code="duplicate_key",
                    )
                self.source.keys[key_path] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                result[key] = self.convert(value_node, key_path, depth + 1)
            return result
        raise self.fail("unsupported YAML node", node)  # pragma: no cover - yaml has three node kinds


def _split_hint(what: str) -> str:
    return "split the policy, or derive child policies for subagents" if what == "policy" else f"split the {what}"


def _reader_error(exc: yaml.reader.ReaderError, text: str, file: str | None, what: str) -> PolicyError:
    """A character YAML refuses (a control character, a lone surrogate), named and located."""
    position = exc.position if isinstance(exc.position, int) and 0 <= exc.position <= len(text) else None
    line = column = None
    if position is not None:
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        if line == 1 and text.startswith("\ufeff"):
            column -= 1  # the byte order mark is not a column an editor shows
    char = exc.character
    code = ord(char) if isinstance(char, str) and len(char) == 1 else char if isinstance(char, int) else None
    named = f" U+{code:04X}" if code is not None else ""
    return PolicyError.single(
        f"invalid character{named} in the {what}", file=file, line=line, column=column, code="yaml",
        hint="remove control characters (other than tab and newline) and lone surrogates",
    )


def load_yaml(text: str | bytes, file: str | None = None, what: str = "policy") -> tuple[Any, SourceMap]:
    """Parse policy YAML into plain data and a `SourceMap`. Raises `PolicyError`.

    `what` names the file in messages (e.g. "case file" for a policy's test cases)."""
    if isinstance(text, bytes):
        if len(text) > MAX_POLICY_BYTES:
            raise PolicyError.single(
                f"{what} is larger than {MAX_POLICY_BYTES} bytes", file=file, code="too_large",
                hint=_split_hint(what),
            )
        raw = text
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line_start = raw.rfind(b"\n", 0, exc.start) + 1
            raise PolicyError.single(
                f"{what} is not valid UTF-8 (byte {exc.start})", file=file, code="encoding",
                line=raw.count(b"\n", 0, exc.start) + 1, column=exc.start - line_start + 1,
                hint="save the file as UTF-8",
            ) from None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        raise PolicyError.single(
            f"{what} is larger than {MAX_POLICY_BYTES} bytes", file=file, code="too_large",
            hint=_split_hint(what),
        )
    _scan_nesting(text, file)
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, file, what) from None
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        start = exc.context_mark
        if exc.problem and exc.context and start is not None and mark is not None and start.line != mark.line:
            # e.g. an unclosed quote: PyYAML notices at the end of the file; say where it began
            problem += f" ({exc.context} that starts at line {start.line + 1}, column {start.column + 1})"
        raise PolicyError.single(
            f"invalid YAML: {problem}", file=file,
            line=mark.line + 1 if mark else None, column=mark.column + 1 if mark else None,
            hint="check the indentation and quoting around this place", code="yaml",
        ) from None
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, file, what) from None
    except yaml.YAMLError as exc:
        raise PolicyError.single(f"invalid YAML: {exc}", file=file, code="yaml") from None
    except RecursionError:
        raise PolicyError.single(
            f"{what} is nested too deeply", file=file, code="too_deep",
            hint="a policy is a few levels deep; flatten the structure",
        ) from None
    finally:
        loader.dispose()
    converter = _Converter(file)
    if node is None:
        converter.source.values[()] = (1, 1)
        return None, converter.source
    try:
        data = converter.convert(node, (), 0)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise PolicyError.single(
            f"invalid YAML value: {exc.problem}", file=file,
            line=mark.line + 1 if mark else None, column=mark.column + 1 if mark else None, code="yaml",
        ) from None
    except RecursionError:
        raise PolicyError.single(f"{what} is nested too deeply", file=file, code="too_deep") from None
    return data, converter.source


__all__ = ["MAX_NESTING", "MAX_POLICY_BYTES", "Problem", "SourceMap", "load_yaml"]
