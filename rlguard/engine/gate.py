"""`PolicyGate`: the single-call runtime gate a deployed agent calls before every side effect."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlguard.engine.compiler import CompiledPolicy, compile_policy
from rlguard.engine.context import ActionContext
from rlguard.engine.errors import PolicyError
from rlguard.engine.loader import PolicySource, load_policy, load_policy_text
from rlguard.engine.state import PolicyState
from rlguard.engine.verdict import STRICTNESS, Verdict

if TYPE_CHECKING:
    from rlguard.engine.batch import ActionBatch, BatchVerdict
    from rlguard.engine.batch_state import BatchPolicyState
    from rlguard.evidence.recorder import EvidenceRecorder


class PolicyGate:
    """Checks actions against a compiled policy: ``gate.check(ActionContext(...)) -> Verdict``.

    Build one with `from_yaml`, `from_string` or `from_dict`; it compiles the policy once and
    every `check` is then synchronous, in-process, thread-safe, does no I/O and never raises for
    a valid `ActionContext` (values it cannot evaluate make rules Unknown, and Unknown never
    allows). Budgets and rates are kept in ``gate.state`` (a `PolicyState`), keyed by session.

    >>> gate = PolicyGate.from_string('''
    ... version: 1
    ... default: deny
    ... rules:
    ...   - id: small-refunds
    ...     when: {tool: "stripe.refund", args.amount_cents: {lte: 10000}}
    ...     verdict: allow
    ... ''')
    >>> gate.check(ActionContext("stripe.refund", {"amount_cents": 5000})).action
    'allow'
    >>> gate.check(ActionContext("stripe.refund", {"amount_cents": 50000})).reason
    'no rule matched (default deny)'
    """

    __slots__ = (
        "__weakref__", "_children", "_extra", "_installed", "_layers", "_lock", "_parent", "_reloads", "_snap",
        "_state",
    )

    def __init__(self, compiled: CompiledPolicy | tuple[CompiledPolicy, ...], state: PolicyState | None = None):
        layers = compiled if isinstance(compiled, tuple) else (compiled,)
        if not layers or not all(isinstance(c, CompiledPolicy) for c in layers):
            raise TypeError("PolicyGate needs a CompiledPolicy; use PolicyGate.from_yaml / from_string / from_dict")
        self._layers: tuple[CompiledPolicy, ...] = layers
        self._lock = threading.Lock()
        self._state: PolicyState | None = state if state is not None else PolicyState()
        # A derived gate: the gate it was derived from and its own layers (after the parent's).
        self._parent: PolicyGate | None = None
        self._extra: tuple[CompiledPolicy, ...] = ()
        self._children: weakref.WeakSet[PolicyGate] = weakref.WeakSet()
        self._snap: PolicyGate | None = None  # the last `_snapshot`, reused while layers and state are the same
        # `reload` calls so far, and which of them is in force: a reload that finishes compiling after
        # a later one never replaces it.
        self._reloads = 0
        self._installed = 0

    @property
    def state(self) -> PolicyState:
        """Budget and rate usage for `check` (a derived gate shares its parent's, as it is now)."""
        state = self._state
        if state is None:
            assert self._parent is not None
            return self._parent.state
        return state

    @state.setter
    def state(self, state: PolicyState) -> None:
        self._state = state

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> PolicyGate:
        """Load, check and compile a policy file. Raises `PolicyError` (file, line, rule, hint)."""
        return cls(compile_policy(load_policy(Path(path))))

    @classmethod
    def from_string(cls, text: str, *, filename: str | None = None) -> PolicyGate:
        """Load, check and compile policy YAML text."""
        return cls(compile_policy(load_policy_text(text, filename=filename)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyGate:
        """Check and compile a policy given as plain data (the YAML structure as dicts and lists)."""
        return cls(compile_policy(load_policy(data)))

    # -- what it enforces ------------------------------------------------------------------
    @property
    def compiled(self) -> CompiledPolicy:
        """The compiled policy in force (for a derived gate, the innermost child's)."""
        return self._layers[-1]

    @property
    def layers(self) -> tuple[CompiledPolicy, ...]:
        """The policies this gate combines: the root first, then each derived child."""
        return self._layers

    @property
    def digest(self) -> str:
        """The policy digest; for a derived gate, a digest over its layers' digests.

        A verdict carries the digest of the layer that decided it (`layers` lists them all).
        """
        return digest_of(self._layers)

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field the policy reads (``tool`` first)."""
        return fields_of(self._layers)

    def _snapshot(self) -> PolicyGate:
        """A gate over the layers in force now, read once, with this gate's state as it is now.

        What one decision and its evidence use while a `reload` may run in another thread: every
        property of the snapshot (layers, fields, digest, namespaces) describes the same policy.
        Later reloads do not reach it.
        """
        layers, state = self._layers, self.state
        snap = self._snap
        if snap is None or snap._layers is not layers or snap._state is not state:
            cls = type(self)
            if cls is PolicyGate:
                snap = PolicyGate(layers, state)
            else:  # a subclass keeps its own methods (a `check` that tightens) and attributes
                snap = object.__new__(cls)
                PolicyGate.__init__(snap, layers, state)
                if hasattr(self, "__dict__"):
                    # Shared, not copied: the subclass's attributes as they are at each call.
                    object.__setattr__(snap, "__dict__", self.__dict__)
            self._snap = snap
        return snap

    # -- the hot path ----------------------------------------------------------------------
    def check(self, ctx: ActionContext, state: PolicyState | None = None) -> Verdict:
        """Decide one action. Allowed actions consume budgets and rates in `state` (default: ours)."""
        layers = self._layers  # one snapshot: a concurrent reload swaps the tuple, never mutates it
        if state is None:
            state = self._state
            if state is None:  # a derived gate: its parent's state, as it is now
                state = self.state
        if len(layers) == 1:
            return layers[0].check(ctx, state)
        return self._check_layers(layers, ctx, state)

    def _check_layers(self, layers: tuple[CompiledPolicy, ...], ctx: ActionContext, state: PolicyState) -> Verdict:
        # Decide every layer without consuming, then consume only if all of them allow.
        spaces = namespaces_of(layers)
        with state.lock:
            decisions = [layer.decide(ctx, state, space) for layer, space in zip(layers, spaces, strict=True)]
            final = decisions[0][0]
            for verdict, _ in decisions[1:]:
                if STRICTNESS[verdict.action] > STRICTNESS[final.action]:
                    final = verdict
            if final.allowed:
                try:
                    for layer, space, (_, consume) in zip(layers, spaces, decisions, strict=True):
                        layer.apply(ctx, state, consume, space)
                except Exception as exc:  # usage could not be recorded: fail closed
                    return layers[0].error_verdict(exc)
        return final

    def check_batch(self, batch: ActionBatch, state: BatchPolicyState | None = None) -> BatchVerdict:
        """Decide a whole batch in one vectorized pass; row i equals `check` on row i's context.

        With `state` (one row per sub-env), allowed rows consume their budgets and rates.
        """
        from rlguard.engine.batch import evaluate_batch

        return evaluate_batch(self, batch, state)

    def namespaces(self) -> list[Hashable]:
        """Where each layer keeps its budget and rate usage in a shared state, root first.

        The root layer keeps its policy's own namespace (so a derived gate sees the parent's
        usage); each child layer gets one of its own, even when it repeats a parent's rule ids.
        """
        return namespaces_of(self._layers)

    def enforce(self, ctx: ActionContext, recorder: EvidenceRecorder, state: PolicyState | None = None) -> Verdict:
        """Check, record, then return the verdict if allowed; raise if not. The action never runs unrecorded.

        Raises:
            ActionBlocked: the verdict is deny (a `PermissionError`).
            ApprovalRequired: the verdict is require_approval (a `PermissionError`).
            EvidenceError: the decision could not be recorded; do not act.
        """
        from rlguard.evidence.enforce import enforce

        return enforce(self, ctx, recorder, state)

    def explain(self, ctx: ActionContext) -> Explanation:
        """A structured trace of how each layer decided (nothing is consumed)."""
        from rlguard.engine.explain import explain

        return explain(self, ctx)

    # -- derivation and reload -------------------------------------------------------------
    def derive(self, child: PolicySource | PolicyGate) -> PolicyGate:
        """A gate for a subagent: each decision is the stricter of this gate's and `child`'s.

        The derived gate follows this gate: a later `reload` of this gate, or a new ``state``,
        reaches it too (a child can only ever tighten the parent as it is now).
        """
        extra = child._layers if isinstance(child, PolicyGate) else (compile_policy(load_policy(child)),)
        # Read the layers and register the child under the lock `reload` swaps them under: a reload
        # either happens before (the child starts from the new layers) or reaches the child.
        with self._lock:
            derived = PolicyGate(self._layers + extra)
            derived._state = None  # the parent's state, whatever it is at each check
            derived._parent = self
            derived._extra = extra
            self._children.add(derived)
        return derived

    def reload(self, source: PolicySource) -> None:
        """Compile a new policy fully, then swap it in atomically; gates derived from this one follow.

        `source`: a path (a str without a line break names a file), YAML text, a dict or a `Policy`.
        For a derived gate, the root layer is replaced (until its parent reloads: it follows the
        parent). An invalid policy raises `PolicyError` and the old policy stays in force. Of two
        reloads running at once, the one called last is in force when both have returned.
        """
        with self._lock:
            self._reloads += 1
            ticket = self._reloads
        if isinstance(source, str):
            policy = load_policy_text(source) if "\n" in source else load_policy(Path(source))
        else:
            policy = load_policy(source)
        compiled = compile_policy(policy)
        with self._lock:
            if ticket < self._installed:  # a later reload is in force already: it stays
                return
            self._installed = ticket
            self._layers = (compiled, *self._layers[1:])
        self._propagate()

    def _propagate(self) -> None:
        """Give every gate derived from this one this gate's layers followed by its own."""
        with self._lock:
            children = list(self._children)
        for child in children:
            with child._lock:
                child._layers = self._layers + child._extra
            child._propagate()

    def __reduce__(self) -> tuple[Any, ...]:
        # A gate pickles as its policy data and recompiles on load (for async vector envs).
        return (_rebuild_gate, (tuple(layer.policy.source for layer in self._layers),))

    def __repr__(self) -> str:
        names = ", ".join(repr(c.policy.name or c.digest[:12]) for c in self._layers)
        return f"PolicyGate({names})"


def namespaces_of(layers: tuple[CompiledPolicy, ...]) -> list[Hashable]:
    """Where each of these layers keeps its budget and rate usage (`PolicyGate.namespaces`)."""
    return [layer.namespace if i == 0 else ("layer", i, layer.namespace) for i, layer in enumerate(layers)]


def digest_of(layers: tuple[CompiledPolicy, ...]) -> str:
    """The digest of a gate with these layers (`PolicyGate.digest`)."""
    if len(layers) == 1:
        return layers[0].digest
    import hashlib

    joined = "+".join(c.digest for c in layers)
    return hashlib.sha256(f"derived:{joined}".encode()).hexdigest()


def fields_of(layers: tuple[CompiledPolicy, ...]) -> tuple[str, ...]:
    """Every field a gate with these layers reads, ``tool`` first (`PolicyGate.fields`)."""
    seen: dict[str, None] = {}
    for layer in layers:
        for name in layer.policy.fields:
            seen.setdefault(name, None)
    return tuple(seen)


def _rebuild_gate(sources: tuple[Any, ...]) -> PolicyGate:
    layers = tuple(compile_policy(load_policy(s)) for s in sources)
    return PolicyGate(layers)


from rlguard.engine.explain import Explanation  # noqa: E402  (the module imports PolicyGate lazily)

__all__ = ["PolicyError", "PolicyGate"]
