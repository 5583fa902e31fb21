"""Scaled dot-product attention shared by every stjax attention layer.

`attend` takes per-head queries, keys and values in the [batch, seq, heads, head_dim] layout of
`jax.nn.dot_product_attention` and computes softmax(q k^T / sqrt(head_dim)) v explicitly, with
attention-probability dropout in training exactly as Hugging Face's GPT-2 does. Grouped-query
attention (fewer key/value heads) is handled by grouping the query heads, never by repeating K/V.

It works heads-first: q, k and v are transposed once to [batch, heads, seq, head_dim], so both
products are plain batched matmuls (query heads sharing a K/V head stacked along the query
axis). `jax.nn.dot_product_attention` (whose default implementation is XLA on every backend, GPU
included) contracts in the [batch, seq, heads] layout with a group axis and took 1.7x longer for
a forward + backward on XLA CPU (`python benchmarks/attention_layouts.py`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from stjax.models.dropout import dropout


def attention_bias_mask(q_len: int, k_len: int, causal: bool, mask: jax.Array | None) -> jax.Array | None:
  """Boolean mask [batch|1, heads|1, q_len, k_len] (True = attend) or None for 'attend to all'."""
  allowed = None
  if causal:
    allowed = jnp.tril(jnp.ones((q_len, k_len), dtype=bool), k=k_len - q_len)[None, None]
  if mask is not None:
    allowed = mask if allowed is None else jnp.logical_and(allowed, mask)
  return allowed


def _stack_groups(allowed: jax.Array, kv_heads: int, groups: int) -> jax.Array:
  """[batch|1, heads|1, q, k] -> [batch|1, kv_heads|1, groups * q, k], query head h = n * groups + g
  stacked along the query axis as `attend` stacks the queries."""
  lead, heads, q_len, k_len = allowed.shape
  if groups == 1:
    return allowed
  if heads == 1:
    return jnp.tile(allowed, (1, 1, groups, 1))
  return allowed.reshape(lead, kv_heads, groups * q_len, k_len)


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    causal: bool,
    dropout_rate: float = 0.0,
    deterministic: bool = True,
    dropout_rng: jax.Array | None = None,
    mask: jax.Array | None = None,
) -> jax.Array:
  """Softmax(q k^T / sqrt(head_dim)) v per head.

  Args:
    q: [batch, q_len, heads, head_dim].
    k, v: [batch, k_len, kv_heads, head_dim]; heads must be a multiple of kv_heads (query head h
      uses key/value head h // (heads / kv_heads), as Llama's repeat_kv).
    causal: query i attends to keys j <= i (+ k_len - q_len).
    dropout_rate: dropout on the attention probabilities (training only).
    deterministic: True disables dropout.
    dropout_rng: PRNG key; required when dropout is active.
    mask: optional boolean [batch|1, heads|1, q_len, k_len], True = may attend.

  Returns:
    [batch, q_len, heads, head_dim] in q's dtype. Softmax in float32.
  """
  b, q_len, heads, head_dim = q.shape
  k_len, kv_heads = k.shape[1], k.shape[2]
  if heads % kv_heads:
    raise ValueError(f"attend: {heads} query heads are not a multiple of {kv_heads} key/value heads")
  use_dropout = dropout_rate > 0.0 and not deterministic
  if use_dropout and dropout_rng is None:
    raise ValueError("attend: dropout_rng is required when dropout is active")
  groups = heads // kv_heads
  # Heads-first; the query heads sharing a K/V head are stacked along the query axis, so both
  # products are [batch, kv_heads]-batched matmuls (a separate group axis is ~1.4x slower on XLA CPU).
  qh = q.reshape(b, q_len, kv_heads, groups, head_dim).transpose(0, 2, 3, 1, 4)
  qh = qh.reshape(b, kv_heads, groups * q_len, head_dim)
  kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [b, n, k, d]
  logits = jnp.einsum("bnqd,bnkd->bnqk", qh, kh, preferred_element_type=jnp.float32) / math.sqrt(head_dim)
  allowed = attention_bias_mask(q_len, k_len, causal, mask)
  if allowed is not None:
    logits = jnp.where(_stack_groups(allowed, kv_heads, groups), logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  if use_dropout:
    probs = dropout(dropout_rng, dropout_rate, probs)
  out = jnp.einsum("bnqk,bnkd->bnqd", probs.astype(v.dtype), vh)  # [b, n, g * q, d]
  out = out.reshape(b, kv_heads, groups, q_len, head_dim).transpose(0, 3, 1, 2, 4)
  return out.reshape(b, q_len, heads, head_dim)
