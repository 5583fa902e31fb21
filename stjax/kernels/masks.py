"""Boolean attention masks shared by the attention kernels."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def attention_bias_mask(q_len: int, k_len: int, causal: bool, mask: jax.Array | None) -> jax.Array | None:
  """Boolean mask [batch|1, heads|1, q_len, k_len] (True = attend) or None for 'attend to all'."""
  allowed = None
  if causal:
    allowed = jnp.tril(jnp.ones((q_len, k_len), dtype=bool), k=k_len - q_len)[None, None]
  if mask is not None:
    allowed = mask if allowed is None else jnp.logical_and(allowed, mask)
  return allowed


def stack_groups(allowed: jax.Array, kv_heads: int, groups: int) -> jax.Array:
  """[batch|1, heads|1, q, k] -> [batch|1, kv_heads|1, groups * q, k], query head h = n * groups + g
  stacked along the query axis as `attend` stacks the queries."""
  lead, heads, q_len, k_len = allowed.shape
  if groups == 1:
    return allowed
  if heads == 1:
    return jnp.tile(allowed, (1, 1, groups, 1))
  return allowed.reshape(lead, kv_heads, groups * q_len, k_len)
