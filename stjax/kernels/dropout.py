"""Dropout with half the random bits: each 32-bit threefry word gives the masks of two elements.

`jax.random.bernoulli` draws one 32-bit threefry word per element, the dominant cost of dropout on
CPU. Here every word is split into two 16-bit halves, each compared with round(rate * 2^16)
(`python benchmarks/dropout_masks.py`: 0.23-0.46x the time for an ST-LLM attention mask). The drop
probability is exact to 2^-17 and kept values are scaled by the exact inverse keep probability,
so the expectation is unchanged. Leading axes keep their shape, so a sharded activation draws a
sharded mask (threefry is partitionable), not a replicated one.

    keep = keep_mask(rng, rate, x.shape)        # bool, P(keep) = 1 - rate (to 2^-17)
    y = dropout(rng, rate, x)                   # kept values scaled by 1 / P(keep)

The Flax module is `stjax.layers.dropout.Dropout`. Used on every backend (not a CPU-only trick):
the masks are exact to 2^-17 and halve the random bits on any device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_HALF = 1 << 16


def _threshold(rate: float) -> int:
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
  return round(rate * _HALF)


def keep_probability(rate: float) -> float:
  """The exact keep probability of `keep_mask` for `rate`: 1 - round(rate * 2^16) / 2^16."""
  return 1.0 - _threshold(rate) / _HALF


def keep_mask(rng: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
  """Boolean mask of `shape`, True with probability `keep_probability(rate)`."""
  shape = tuple(shape)
  if not shape:
    return jax.random.bits(rng, (), jnp.uint16) >= _threshold(rate)
  *lead, last = shape
  words = jax.random.bits(rng, (*lead, (last + 1) // 2), jnp.uint32)
  halves = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(*lead, -1)[..., :last]
  return halves >= _threshold(rate)


def dropout(rng: jax.Array, rate: float, x: jax.Array) -> jax.Array:
  """x with elements zeroed at `rate` and the rest divided by the keep probability."""
  keep = keep_mask(rng, rate, x.shape)
  return jnp.where(keep, x / jnp.asarray(keep_probability(rate), x.dtype), jnp.zeros((), x.dtype))
