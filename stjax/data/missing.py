"""Missing input readings (0 in DCRNN-style speed data) filled before a model sees them.

`config.data.fill_missing = "last"`: an input reading of exactly 0 takes the node's last non-zero
reading before it (causal: only the past is read); readings missing since the start take the
training scaler's mean. Targets are never filled: the protocol's masked loss and metrics still
skip them.
"""

from __future__ import annotations

import numpy as np

from stjax.errors import UserError

FILL_RULES = ("none", "last")


def check_fill(rule: str) -> str:
  if rule not in FILL_RULES:
    raise UserError(f"config.data.fill_missing: {rule!r} is not one of {', '.join(FILL_RULES)}")
  return rule


def fill_last(values: np.ndarray, fallback: np.ndarray, time_axis: int = 0) -> np.ndarray:
  """Zeros replaced by the last non-zero value before them along `time_axis`.

  Args:
    values: [..., T, ..., N, C] raw readings (0 = missing), T at `time_axis`.
    fallback: [1 | N, C] value for readings with nothing observed before them (the scaler mean).
  Returns: float32 array of values' shape.
  """
  v = np.moveaxis(np.asarray(values, np.float32), time_axis, 0)  # [T, ...]
  steps = np.arange(v.shape[0]).reshape((-1,) + (1,) * (v.ndim - 1))
  last_seen = np.maximum.accumulate(np.where(v != 0, steps, -1), axis=0)  # [T, ...], -1 = never
  filled = np.take_along_axis(v, np.maximum(last_seen, 0), axis=0)
  filled = np.where(last_seen < 0, np.broadcast_to(fallback, v.shape[1:])[None], filled)
  return np.moveaxis(filled.astype(np.float32), 0, time_axis)


def fill_windows(x: np.ndarray, rule: str, mean: np.ndarray) -> np.ndarray:
  """Cut input windows x [B, T_in, N, C] (original units, 0 = missing) filled by `rule`, each window
  on its own (nothing before it is known): readings missing since it began take `mean` [1 | N, C]."""
  x = np.asarray(x, np.float32)
  return fill_last(x, mean, time_axis=1) if check_fill(rule) == "last" else x
