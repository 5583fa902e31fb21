"""Reversible instance normalisation (RevIN, Kim et al. 2022).

Each (sample, node, feature) series is normalised over the time axis by its own mean and standard
deviation, then scaled and shifted by a learnable affine per feature. The model predicts in this
normalised space and `denormalize` maps predictions back with the same statistics, so level and
scale shifts between windows are handled outside the network.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


class RevINStats(NamedTuple):
  """Statistics of one batch: mean and std, each [batch, 1, nodes, features]."""

  mean: jnp.ndarray
  std: jnp.ndarray


class RevIN(nn.Module):
  """Attributes:
  num_features: F, the feature (channel) count of the input.
  affine: learn a per-feature weight (init 1) and bias (init 0).
  eps: added to the variance, so constant (e.g. all-missing) series give std = sqrt(eps), not 0.
  """

  num_features: int
  affine: bool = True
  eps: float = 1e-5

  def setup(self):
    if self.affine:
      self.weight = self.param("weight", nn.initializers.ones, (self.num_features,))
      self.bias = self.param("bias", nn.initializers.zeros, (self.num_features,))

  def normalize(self, x: jnp.ndarray) -> tuple[jnp.ndarray, RevINStats]:
    """x: [batch, time, nodes, features] -> (normalised x, stats). Statistics carry no gradient."""
    xf = x.astype(jnp.float32)
    mean = jax.lax.stop_gradient(xf.mean(axis=1, keepdims=True))
    var = jax.lax.stop_gradient(((xf - mean) ** 2).mean(axis=1, keepdims=True))
    std = jnp.sqrt(var + self.eps)
    y = (xf - mean) / std
    if self.affine:
      y = y * self.weight + self.bias
    return y.astype(x.dtype), RevINStats(mean, std)

  def denormalize(self, y: jnp.ndarray, stats: RevINStats, features: slice = slice(None)) -> jnp.ndarray:
    """Exact inverse of `normalize` for the feature subset `features`.

    Args:
      y: [batch, time', nodes, F'] in normalised space (F' features = `features` of the input).
      stats: from `normalize`.
      features: which input features y's channels are (predictions of the first C_out inputs:
        `slice(0, C_out)`).
    Returns: [batch, time', nodes, F'] in input units.
    """
    yf = y.astype(jnp.float32)
    if self.affine:
      # The 1e-10 guard keeps a weight that crossed zero from producing inf (as in RevIN).
      yf = (yf - self.bias[features]) / (self.weight[features] + 1e-10)
    return (yf * stats.std[..., features] + stats.mean[..., features]).astype(y.dtype)
