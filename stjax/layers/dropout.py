"""Dropout as a Flax module over stjax's half-bit masks (`stjax.kernels.dropout`).

y = Dropout(rate)(x, deterministic=False)   # needs a "dropout" rng, like flax's nn.Dropout
"""

from __future__ import annotations

import jax
from flax import linen as nn

from stjax.kernels.dropout import dropout, keep_mask, keep_probability

__all__ = ["Dropout", "dropout", "keep_mask", "keep_probability"]


class Dropout(nn.Module):
  """Drop-in for `flax.linen.Dropout`: __call__(x, deterministic) with the "dropout" rng stream."""

  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    return dropout(self.make_rng("dropout"), self.rate, x)
