"""Coercing metric inputs (record DataFrames, Series, lists, tensors) to numpy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_array(values: Any, dtype: Any = float, name: str = "values") -> np.ndarray:
    """Return ``values`` as a 1-D numpy array of ``dtype`` (accepts lists, Series, tensors, arrays)."""
    if hasattr(values, "detach"):  # torch tensor, without importing torch
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        array = array.reshape(-1)
    return array


def column(records: Any, name: str, dtype: Any = float) -> np.ndarray:
    """Return column ``name`` of a records DataFrame (or mapping) as a numpy array; KeyError names the column."""
    try:
        values = records[name]
    except (KeyError, IndexError, TypeError):
        raise KeyError(f"records have no column {name!r}") from None
    return as_array(values, dtype, name)


def check_same_length(**arrays: np.ndarray) -> int:
    """Return the common length of ``arrays``; raise ValueError naming them when lengths differ."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError("inputs differ in length: " + ", ".join(f"{k}={n}" for k, n in lengths.items()))
    return next(iter(lengths.values()), 0)
