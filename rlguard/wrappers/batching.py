"""Row operations on batched observations and actions (arrays, or dicts and tuples of them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array


def take_rows(data: Any, rows: np.ndarray) -> Any:
    """The rows `rows` of a batched value (an array, or a dict / tuple of batched values)."""
    if isinstance(data, np.ndarray):
        return data[rows]
    if isinstance(data, Mapping):
        return {key: take_rows(value, rows) for key, value in data.items()}
    if isinstance(data, tuple):
        return tuple(take_rows(value, rows) for value in data)
    return np.asarray(data)[rows]


def put_rows(data: Any, rows: np.ndarray, values: Any) -> Any:
    """A copy of the batched value `data` whose rows `rows` are replaced by `values`."""
    if isinstance(data, Mapping):
        return {key: put_rows(data[key], rows, values[key]) for key in data}
    if isinstance(data, tuple):
        return tuple(put_rows(d, rows, v) for d, v in zip(data, values, strict=True))
    out = np.array(data, copy=True)
    out[rows] = values
    return out


def repeat_rows(data: Any, repeats: int) -> Any:
    """Each row of a batched value repeated `repeats` times in place (row i becomes rows i*r .. i*r+r-1)."""
    if isinstance(data, Mapping):
        return {key: repeat_rows(value, repeats) for key, value in data.items()}
    if isinstance(data, tuple):
        return tuple(repeat_rows(value, repeats) for value in data)
    return np.repeat(np.asarray(data), repeats, axis=0)


def batch_one(space: spaces.Space[Any], value: Any, cast: bool = True) -> Any:
    """A single env's observation or action as a batch of one (leading axis of size 1).

    With `cast`, arrays take the space's dtype (as a vector env batches observations); without,
    they keep their own, so that an action is judged as the value the env will run (a cast to the
    space's dtype could round or wrap it).
    """
    if isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiBinary, spaces.MultiDiscrete)):
        return np.expand_dims(np.asarray(value, dtype=space.dtype) if cast else np.asarray(value), 0)
    if isinstance(space, spaces.Dict):
        return {key: batch_one(sub, value[key], cast) for key, sub in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(batch_one(sub, v, cast) for sub, v in zip(space.spaces, value, strict=True))
    out: Any = create_empty_array(space, 1)
    return concatenate(space, [value], out)


def sample_batch(space: spaces.Space[Any], size: int, seed: int = 0) -> Any:
    """`size` samples of a single space, batched (used to probe a schema's fields function)."""
    batched = batch_space(space, size)
    batched.seed(seed)
    return batched.sample()
