"""`ActionContext`: one proposed action, as the gate sees it, and how fields are read from it."""

from __future__ import annotations

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
        if tool.__class__ is not str and not isinstance(tool, str):
            raise TypeError(f"ActionContext: `tool` must be a str, got {type(tool).__name__} {tool!r}")
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


def is_invalid_tool_name(raw: str, normalized: str) -> bool:
    """Empty, or holding a control, format or lone surrogate character (Unicode Cc / Cf / Cs).

    Checked before and after NFKC. Lone surrogates cannot even be written to evidence as UTF-8.
    """
    if not raw or not normalized:
        return True
    for text in (raw, normalized):
        if text.isprintable():
            # isprintable() is False for every Cc, Cf and Cs character (and for some others,
            # which the exact check below lets through).
            continue
        for ch in text:
            if unicodedata.category(ch) in ("Cc", "Cf", "Cs"):
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
            index = int(seg)
            if index >= len(value):
                return MISSING
            value = value[index]
        else:
            return MISSING
    return MISSING if value is None else value
