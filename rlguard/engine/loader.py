"""Load a policy from a file, YAML text or plain data."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

from rlguard.engine.errors import PolicyError
from rlguard.engine.model import Policy
from rlguard.engine.parser import parse_policy
from rlguard.engine.yaml_source import MAX_POLICY_BYTES, load_yaml

PolicySource = Union[str, "os.PathLike[str]", Mapping[str, Any], Policy]


def load_policy_text(text: str | bytes, *, filename: str | None = None) -> Policy:
    """A checked `Policy` from YAML text (never read as a path)."""
    name = filename or "<string>"
    data, source_map = load_yaml(text, name)
    return parse_policy(data, source_map, name)


def load_policy(source: PolicySource, *, filename: str | None = None) -> Policy:
    """A checked `Policy` from a path (`Path`, or a str naming an existing file), YAML text, or a dict.

    Raises:
        PolicyError: every problem found, each with file, line, column, rule id and a hint.
    """
    if isinstance(source, Policy):
        return source
    if isinstance(source, Mapping):
        return parse_policy(source, None, filename or "<dict>")
    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and source.lower().endswith((".yaml", ".yml", ".json"))
    ):
        path = Path(source)
        name = filename or str(source)
        try:
            size = path.stat().st_size
            if size > MAX_POLICY_BYTES:
                raise PolicyError.single(
                    f"policy is larger than {MAX_POLICY_BYTES} bytes ({size} bytes)", file=name, code="too_large",
                    hint="split the policy, or derive child policies for subagents",
                )
            raw = path.read_bytes()
        except OSError as exc:
            raise PolicyError.single(
                f"cannot read policy: {exc.strerror or exc}", file=name, code="io",
                hint="check the path and its permissions",
            ) from None
        data, source_map = load_yaml(raw, name)
        return parse_policy(data, source_map, name)
    if isinstance(source, (str, bytes)):
        return load_policy_text(source, filename=filename)
    raise TypeError(f"a policy source is a path, YAML text or a mapping, got {type(source).__name__}")
