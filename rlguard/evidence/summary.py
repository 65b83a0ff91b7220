"""Aggregate an evidence log in one streaming pass: the numbers behind ``rlguard report``."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from rlguard.evidence.batchrecord import DEFAULT_RULE
from rlguard.evidence.errors import EvidenceError
from rlguard.evidence.owasp import category

ACTIONS: tuple[str, ...] = ("allow", "deny", "require_approval")
_MAX_LINE = 1 << 30


@dataclass
class RuleInfo:
    """A rule as a ``policy`` record describes it."""

    id: str
    verdict: str
    severity: str
    tags: tuple[str, ...]


@dataclass
class StepStats:
    """Training evidence: per ``batch`` record, its step, rows and rows not allowed."""

    steps: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    blocked: list[int] = field(default_factory=list)


@dataclass
class EvidenceSummary:
    """Totals of one log. Counters map a key to a `Counter` of actions (``allow``, ``deny``, ...)."""

    path: Path
    headers: list[dict[str, Any]] = field(default_factory=list)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    policies: dict[str, list[RuleInfo]] = field(default_factory=dict)
    decisions: int = 0
    indeterminate: int = 0
    redacted: int = 0
    unreadable: int = 0
    #: Decision records, and batch rows a rule decided, whose policy has no `policy` record in the
    #: log: their tags are unknown.
    without_policy: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    by_action: Counter[str] = field(default_factory=Counter)
    by_rule: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_tool: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_environment: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_tag: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    per_second: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    batch_by_action: Counter[str] = field(default_factory=Counter)
    batch_by_rule: Counter[str] = field(default_factory=Counter)
    batch_by_tool: Counter[str] = field(default_factory=Counter)
    batch_by_tag: Counter[str] = field(default_factory=Counter)
    steps: StepStats = field(default_factory=StepStats)

    @property
    def batches(self) -> int:
        """Number of ``batch`` records."""
        return len(self.steps.steps)

    def rule_tags(self) -> dict[str, set[str]]:
        """Rule id -> tags, over every policy record."""
        out: dict[str, set[str]] = defaultdict(set)
        for rules in self.policies.values():
            for rule in rules:
                out[rule.id].update(rule.tags)
        return out

    def owasp_covered(self) -> dict[str, list[str]]:
        """OWASP category -> ids of the rules tagged with it (in any policy record)."""
        out: dict[str, list[str]] = defaultdict(list)
        for rule_id, tags in self.rule_tags().items():
            for tag in tags:
                name = category(tag)
                if name is not None and rule_id not in out[name]:
                    out[name].append(rule_id)
        return out


def _label(value: Any) -> str:
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class _Aggregator:
    def __init__(self, summary: EvidenceSummary) -> None:
        self.s = summary
        self.tags: dict[str, dict[str, tuple[str, ...]]] = {}  # digest -> rule id -> tags
        # Tags are resolved at the end, so a policy record may come after the decisions it explains.
        self.fired: Counter[tuple[str, tuple[str, ...], str]] = Counter()
        self.batch_fired: Counter[tuple[str, str]] = Counter()

    def add(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        if kind == "decision":
            self.decision(record)
        elif kind == "batch":
            self.batch(record)
        elif kind == "policy":
            self.policy(record)
        elif kind == "header":
            self.s.headers.append({k: v for k, v in record.items() if k not in ("prev", "hash")})
        elif kind == "repair":
            self.s.repairs.append({k: v for k, v in record.items() if k not in ("prev", "hash")})

    def policy(self, record: dict[str, Any]) -> None:
        digest = str(record.get("digest"))
        rules: list[RuleInfo] = []
        for layer in record.get("layers") or ():
            if not isinstance(layer, dict):
                continue
            layer_rules = [
                RuleInfo(str(rule.get("id")), str(rule.get("verdict")), str(rule.get("severity")),
                         tuple(str(t) for t in rule.get("tags") or ()))
                for rule in layer.get("rules") or () if isinstance(rule, dict)
            ]
            rules.extend(layer_rules)
            # A decision carries the digest of the layer that decided it (a derived gate's policy
            # record is filed under the digest over all its layers).
            if isinstance(layer.get("digest"), str):
                self.tags.setdefault(layer["digest"], {r.id: r.tags for r in layer_rules})
        self.s.policies[digest] = rules
        self.tags[digest] = {r.id: r.tags for r in rules}

    def finish(self) -> None:
        for (digest, fired, action), count in self.fired.items():
            if digest not in self.tags:
                self.s.without_policy += count
            for tag in self._tags_of(digest, fired):
                self.s.by_tag[tag][action] += count
        for (digest, rule_id), count in self.batch_fired.items():
            if digest not in self.tags:
                self.s.without_policy += count
            for tag in self._tags_of(digest, (rule_id,)):
                self.s.batch_by_tag[tag] += count

    def _tags_of(self, digest: str, rule_ids: tuple[str, ...]) -> set[str]:
        # Only the tags of the policy that decided: another policy in the log may give the same
        # rule id other tags (a reload that retagged it), so a rule id alone names no tag.
        table = self.tags.get(digest, {})
        out: set[str] = set()
        for rule_id in rule_ids:
            out.update(table.get(rule_id, ()))
        return out

    def decision(self, record: dict[str, Any]) -> None:
        s = self.s
        action = str(record.get("action"))
        s.decisions += 1
        s.by_action[action] += 1
        rule_id = record.get("rule_id")
        s.by_rule[rule_id if isinstance(rule_id, str) else DEFAULT_RULE][action] += 1
        s.by_tool[_label(record.get("tool"))][action] += 1
        s.by_environment[_label(record.get("environment"))][action] += 1
        if record.get("indeterminate") is True:
            s.indeterminate += 1
        if record.get("redacted"):
            s.redacted += 1
        fired = [r for r in record.get("violations") or () if isinstance(r, str)]
        if isinstance(rule_id, str):
            fired.append(rule_id)
        self.fired[(str(record.get("policy_digest")), tuple(fired), action)] += 1
        ts = record.get("ts")
        if isinstance(ts, str):
            if s.first_ts is None or ts < s.first_ts:
                s.first_ts = ts
            if s.last_ts is None or ts > s.last_ts:
                s.last_ts = ts
            s.per_second[ts[:19]][action] += 1

    def batch(self, record: dict[str, Any]) -> None:
        s = self.s
        counts = record.get("counts") or {}
        n = int(record.get("n") or 0)
        allowed = int(counts.get("allow", 0))
        for action in ACTIONS:
            s.batch_by_action[action] += int(counts.get(action, 0))
        s.steps.steps.append(int(record.get("step") or 0))
        s.steps.rows.append(n)
        s.steps.blocked.append(n - allowed)
        by_rule = record.get("by_rule") or {}
        for rule_id, count in by_rule.items():
            s.batch_by_rule[rule_id] += int(count)
            self.batch_fired[(str(record.get("policy_digest")), rule_id)] += int(count)
        rows = record.get("rows")
        tools = record.get("tools")
        if isinstance(rows, dict) and isinstance(tools, list):
            codes = rows.get("tool") or []
            actions = rows.get("action") or []
            for code, action in zip(codes, actions, strict=False):
                if action != 0 and isinstance(code, int) and 0 <= code < len(tools):
                    s.batch_by_tool[str(tools[code])] += 1


def _int(value: Any) -> bool:
    return value.__class__ is int


def _ints(mapping: Any) -> bool:
    """A JSON object of integer counts (or absent)."""
    return mapping is None or (isinstance(mapping, dict) and all(_int(v) for v in mapping.values()))


def _list(value: Any) -> bool:
    return value is None or isinstance(value, list)


def well_formed(record: dict[str, Any]) -> bool:
    """Whether the fields the totals read have the types the format gives them (a line that
    parses but does not, e.g. an edited one, is counted in ``unreadable`` rather than totalled)."""
    kind = record.get("kind")
    if kind == "decision":
        return _list(record.get("violations"))
    if kind == "batch":
        rows = record.get("rows")
        return (
            _ints(record.get("counts")) and _ints(record.get("by_rule"))
            and (record.get("n") is None or _int(record.get("n")))
            and (record.get("step") is None or _int(record.get("step")))
            and _list(record.get("tools"))
            and (rows is None or (isinstance(rows, dict) and _list(rows.get("tool")) and _list(rows.get("action"))))
        )
    if kind == "policy":
        layers = record.get("layers")
        return _list(layers) and all(
            isinstance(layer, dict) and _list(layer.get("rules"))
            and all(isinstance(rule, dict) and _list(rule.get("tags")) for rule in layer.get("rules") or ())
            for layer in layers or ()
        )
    if kind == "header":
        redact = record.get("redact")
        return redact is None or (isinstance(redact, list) and all(isinstance(p, str) for p in redact))
    return True


def summarize(path: str | os.PathLike[str]) -> EvidenceSummary:
    """Read a log once and total it. Lines that do not parse, or whose fields do not have the
    format's types, are counted in ``unreadable``.

    Raises:
        EvidenceError: the file cannot be read.
    """
    log = Path(os.fspath(path))
    summary = EvidenceSummary(path=log)
    agg = _Aggregator(summary)
    try:
        with log.open("rb") as stream:
            while True:
                raw = stream.readline(_MAX_LINE)
                if not raw:
                    break
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    summary.unreadable += 1
                    continue
                if isinstance(record, dict) and well_formed(record):
                    agg.add(record)
                else:
                    summary.unreadable += 1
    except OSError as exc:
        raise EvidenceError(f"cannot read `{log}`: {exc.strerror or exc}") from exc
    agg.finish()
    return summary
