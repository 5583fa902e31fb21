"""The z-score `Scaler`: fitted on a split's steps, applied to [..., N, C] arrays.

`Scaler.fit` computes weighted means and standard deviations in float64 chunks (no full float64
copy of the series) under one of three rules: "global" (per channel), "per_node" (per node and
channel, constant columns left unscaled as sklearn does) and "global_train_val" (one scalar over
chosen channels); `transform` / `inverse` work on NumPy and JAX arrays alike.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from stjax.errors import UserError

_FIT_CHUNK = 2048  # time steps per chunk when fitting a scaler, bounds float64 temporaries


@dataclasses.dataclass(frozen=True)
class Scaler:
  """z-score `(v - mean) / std`, broadcast over [..., N, C].

  Attributes:
    mean: [1, C] (global) or [N, C] (per node) float32.
    std: same shape as mean, float32, > 0.
  """

  mean: np.ndarray
  std: np.ndarray

  def transform(self, v):
    """v: [..., N, C] NumPy or JAX array -> scaled, same type."""
    return (v - self.mean) / self.std

  def inverse(self, v):
    """v: [..., N, C] scaled NumPy or JAX array -> original units, same type."""
    return v * self.std + self.mean

  def target(self, channels: Sequence[int] | None) -> "Scaler":
    """The scaler of a subset of channels (None = all), e.g. the target channels."""
    if channels is None:
      return self
    idx = list(channels)
    return Scaler(self.mean[:, idx], self.std[:, idx])

  @classmethod
  def fit(
    cls, values: np.ndarray, weights: np.ndarray, rule: str, channels: Sequence[int], name: str
  ) -> "Scaler":
    """Fits on the steps with weight > 0 (each counted `weight` times).

    Args:
      values: [T, N, C] series.
      weights: [T] float64 multiplicity of each step (see `Protocol.scaler_weights`).
      rule: "global" (per channel), "per_node" (per node and channel), "global_train_val" (one
        scalar over `channels`, applied to every channel).
      channels: the channels that "global_train_val" pools.
      name: dataset name for error messages.
    """
    n, c = values.shape[1:]
    used = np.nonzero(weights > 0)[0]
    total = weights.sum()

    def weighted_sum(fn) -> np.ndarray:  # sum_t w_t fn(v_t) -> [N, C], in float64 chunks
      acc = np.zeros((n, c))
      for lo in range(0, len(used), _FIT_CHUNK):
        steps = used[lo : lo + _FIT_CHUNK]
        acc += np.tensordot(weights[steps], fn(values[steps].astype(np.float64)), axes=(0, 0))
      return acc

    node_mean = weighted_sum(lambda v: v) / total
    pool = list(channels)
    if rule == "per_node":
      mean = node_mean
    elif rule == "global":
      mean = node_mean.mean(axis=0, keepdims=True)
    else:
      mean = np.full((1, c), node_mean[:, pool].mean())
    sq = weighted_sum(lambda v: (v - mean) ** 2) / total  # [N, C] weighted mean squared deviation
    if rule == "per_node":
      # sklearn's StandardScaler (STH-SepNet) leaves a constant column unscaled (std 1).
      std = np.sqrt(sq)
      std[std == 0] = 1.0
    else:
      std = (
        np.sqrt(sq.mean(axis=0, keepdims=True))
        if rule == "global"
        else np.full((1, c), np.sqrt(sq[:, pool].mean()))
      )
      if np.any(std == 0):
        raise UserError(f"dataset {name}: the training data is constant (std 0), cannot z-score it")
    return cls(mean.astype(np.float32), std.astype(np.float32))
