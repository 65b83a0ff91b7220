"""What every reward shaper is: ``shaper(reward, verdicts, done=None) -> reward``, over numpy arrays."""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]
BoolArray = npt.NDArray[np.bool_]
CostKind = Literal["violation", "penalty"]


class VerdictArrays(Protocol):
    """Anything with per-row ``allowed`` (bool) and ``penalty`` (float) arrays, e.g. a `BatchVerdict`."""

    @property
    def allowed(self) -> npt.NDArray[Any]: ...

    @property
    def penalty(self) -> npt.NDArray[Any]: ...


class StepVerdicts(NamedTuple):
    """The verdict arrays a governed env hands its shaper for one step.

    ``allowed``: the proposed action was allowed (an approved ``require_approval`` counts as
    allowed); ``penalty``: the policy's penalty for it (warn rules included). Rows that were not
    evaluated (a NEXT_STEP reset step) are allowed with penalty 0.
    """

    allowed: BoolArray
    penalty: npt.NDArray[np.float32]


class RewardShaper:
    """Base class of the shapers: vectorized, usable inside the wrappers and on their own.

    ``shaper(reward, verdicts, done=None)`` returns the shaped reward (a new array). ``done``
    marks the rows whose episode ends at this step; shapers that keep per-episode sums need it
    (without it no episode ends). ``reset(mask)`` starts new episodes in the rows of ``mask``
    (all rows when None) without applying anything.

    A shaper whose ``clean_rows_unchanged`` is True returns the reward unchanged, bit for bit,
    on rows allowed with penalty 0, and keeps no state for them; a governed env then need not
    mask its shaping out of the rows it did not evaluate (which read as allowed with penalty 0).
    """

    #: See the class docstring; False unless a shaper guarantees it.
    clean_rows_unchanged: bool = False

    def __call__(self, reward: npt.ArrayLike, verdicts: VerdictArrays, done: npt.ArrayLike | None = None) -> FloatArray:
        raise NotImplementedError

    def reset(self, mask: npt.ArrayLike | None = None) -> None:
        """Forget the running episodes of the rows in `mask` (all when None)."""


def as_reward(reward: npt.ArrayLike) -> FloatArray:
    """The reward as a float array (float32 stays float32; ints become float64)."""
    arr = np.asarray(reward)
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return arr


def step_cost(verdicts: VerdictArrays, kind: CostKind) -> npt.NDArray[np.float64]:
    """The per-row safety cost: 1.0 per refused action (``violation``) or the policy's penalty."""
    if kind == "violation":
        return (~np.asarray(verdicts.allowed, dtype=bool)).astype(np.float64)
    return np.asarray(verdicts.penalty, dtype=np.float64)


def check_cost_kind(owner: str, cost: Any) -> CostKind:
    """`cost` if it is ``"violation"`` or ``"penalty"``, else a clear error."""
    if cost not in ("violation", "penalty"):
        raise ValueError(
            f"{owner}: `cost` must be \"violation\" or \"penalty\", got `{cost!r}`\n"
            "help: \"violation\" counts 1.0 per refused action; \"penalty\" uses the policy's penalty"
        )
    return cost  # type: ignore[no-any-return]


def check_number(owner: str, name: str, value: Any, *, minimum: float | None = 0.0, finite: bool = True) -> float:
    """`value` as a float if it is a real number (not bool) within bounds, else a clear error."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    number = float(value) if ok else math.nan
    if not ok or math.isnan(number) or (finite and not math.isfinite(number)) or (
        minimum is not None and number < minimum
    ):
        bound = "" if minimum is None else f" ≥ {minimum:g}"
        raise ValueError(
            f"{owner}: `{name}` must be a {'finite ' if finite else ''}number{bound}, got `{value!r}`\n"
            f"help: pass e.g. {name}=1.0"
        )
    return number


class EpisodeSums:
    """Per-row running sums over the current episode (sized on first use)."""

    def __init__(self) -> None:
        self.sums: npt.NDArray[np.float64] | None = None

    def add(self, owner: str, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if self.sums is None:
            self.sums = np.zeros(values.shape, dtype=np.float64)
        elif self.sums.shape != values.shape:
            raise ValueError(
                f"{owner}: got {values.size} rows after {self.sums.size} in the same run\n"
                "help: use one shaper per env (or per vector env), or call reset() between runs"
            )
        self.sums += values
        return self.sums

    def reset(self, mask: npt.ArrayLike | None = None) -> None:
        if self.sums is None:
            return
        if mask is None:
            self.sums = None
        else:
            self.sums[np.asarray(mask, dtype=bool)] = 0.0


def done_mask(done: npt.ArrayLike | None, shape: tuple[int, ...]) -> BoolArray | None:
    """`done` as a bool array of `shape`, or None when no episode ends."""
    if done is None:
        return None
    mask = np.asarray(done, dtype=bool)
    if mask.shape != shape:
        mask = np.broadcast_to(mask, shape)
    return mask if bool(mask.any()) else None
