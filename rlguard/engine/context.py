"""`ActionContext`: one proposed action, as the gate sees it, and how fields are read from it."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any, NamedTuple


class _Fields(NamedTuple):
    tool: str
    args: Mapping[str, Any]
    tool_meta: Mapping[str, Any]
    environment: Any
    agent: Any
    session: Any
    context: Mapping[str, Any]


_EMPTY: Mapping[str, Any] = {}


class ActionContext(_Fields):
    """One action an agent proposes: the tool, its arguments and what the caller knows about it.

    Immutable (a named tuple, so building one per call stays cheap). ``args`` are the agent's
    own arguments and must never decide trust; ``tool_meta`` (read as ``tool.<key>``),
    ``environment``, ``agent``, ``session`` and ``context`` come from the caller.

    >>> ctx = ActionContext("stripe.refund", {"amount_cents": 5000}, environment="dev")
    >>> ctx.args["amount_cents"]
    5000

    Raises:
        TypeError: ``tool`` is not a ``str``, or ``args``, ``tool_meta`` or ``context`` is not
            a mapping.
    """

    __slots__ = ()

    def __new__(
        cls,
        tool: str,
        args: Mapping[str, Any] | None = None,
        tool_meta: Mapping[str, Any] | None = None,
        environment: Any = None,
        agent: Any = None,
        session: Any = None,
        context: Mapping[str, Any] | None = None,
    ) -> ActionContext:
        if type(tool) is not str:
            if not issubclass(type(tool), str):
                raise TypeError(f"ActionContext: `tool` must be a str, got {type(tool).__name__}")
            tool = str.__str__(tool)  # a str subclass is read as the string it holds, never its overrides
        if args is None:
            args = _EMPTY
        elif args.__class__ is not dict and not isinstance(args, Mapping):
            raise TypeError(f"ActionContext: `args` must be a mapping, got {type(args).__name__}")
        if tool_meta is None:
            tool_meta = _EMPTY
        elif tool_meta.__class__ is not dict and not isinstance(tool_meta, Mapping):
            raise TypeError(f"ActionContext: `tool_meta` must be a mapping, got {type(tool_meta).__name__}")
        if context is None:
            context = _EMPTY
        elif context.__class__ is not dict and not isinstance(context, Mapping):
            raise TypeError(f"ActionContext: `context` must be a mapping, got {type(context).__name__}")
        return tuple.__new__(cls, (tool, args, tool_meta, environment, agent, session, context))

    @classmethod
    def _make(cls, iterable: Any) -> ActionContext:  # type: ignore[override]  # checks, unlike tuple's
        return cls(*iterable)

    def _replace(self, **changes: Any) -> ActionContext:
        fields = self._asdict()
        fields.update(changes)
        return type(self)(**fields)

    def __repr__(self) -> str:
        return (
            f"ActionContext(tool={self.tool!r}, args={dict(self.args)!r}, tool_meta={dict(self.tool_meta)!r}, "
            f"environment={self.environment!r}, agent={self.agent!r}, session={self.session!r}, "
            f"context={dict(self.context)!r})"
        )


class _Missing:
    """The value of a field the context does not have (or has as None)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


def normalize_tool_name(name: str) -> str:
    """Unicode NFKC, then casefold: how tool names are compared everywhere."""
    return unicodedata.normalize("NFKC", name).casefold()


#: Longest tool name accepted (after normalization); longer names are invalid.
MAX_TOOL_NAME_LENGTH = 1024
# Control, format, surrogate, private-use and unassigned characters, and every kind of space or
# line/paragraph separator: none belongs in a tool name, and each can make a name look like
# another one (" shell.exec", "shell.exec\u2028") to a deny list.
_INVALID_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


#: A pattern matching Unicode's Default_Ignorable_Code_Point characters: they render as nothing,
#: so "shell.exec" with one looks like "shell.exec" to a person while no rule naming it matches.
#: Many are letters or marks (Hangul fillers, variation selectors, the combining grapheme joiner),
#: which the categories above do not cover.
IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)


def is_invalid_tool_name(raw: str, normalized: str) -> bool:
    """Empty, too long, or holding a character of category C* (control, format, surrogate,
    private use, unassigned) or Z* (space, line or paragraph separator), or a default-ignorable
    one (it renders as nothing), before or after NFKC.
    """
    if not raw or not normalized or len(normalized) > MAX_TOOL_NAME_LENGTH:
        return True
    for text in (raw, normalized):
        if text.isprintable() and " " not in text:
            # isprintable() is False for every character of those categories except the
            # ASCII space, which is checked beside it.
            if not text.isascii() and IGNORABLE.search(text):
                return True
            continue
        for ch in text:
            if unicodedata.category(ch) in _INVALID_CATEGORIES:
                return True
    return False


def walk_path(value: Any, segments: tuple[str, ...]) -> Any:
    """Follow dotted segments into mappings (by key) and lists/tuples (by integer segment)."""
    for seg in segments:
        if isinstance(value, Mapping):
            try:
                value = value[seg]
            except (KeyError, TypeError):
                return MISSING
            except Exception:  # a hostile mapping: treat as absent (Unknown), never raise
                return MISSING
        elif isinstance(value, (list, tuple)) and seg.isdigit() and seg.isascii():
            try:
                value = value[int(seg)]
            except Exception:  # out of range, or a hostile sequence: absent (Unknown), never raise
                return MISSING
        else:
            return MISSING
    return MISSING if value is None else value
