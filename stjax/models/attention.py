"""Scaled dot-product attention shared by every stjax attention layer.

`attend` takes per-head queries, keys and values in the [batch, seq, heads, head_dim] layout of
`jax.nn.dot_product_attention`. Without attention dropout it calls that function (cuDNN flash
kernels on GPU, memory linear in the sequence); with dropout it computes the probabilities
explicitly and drops them, exactly as Hugging Face's GPT-2 does in training.
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
    k, v: [batch, k_len, heads, head_dim].
    causal: query i attends to keys j <= i (+ k_len - q_len).
    dropout_rate: dropout on the attention probabilities (training only).
    deterministic: True disables dropout.
    dropout_rng: PRNG key; required when dropout is active.
    mask: optional boolean [batch|1, heads|1, q_len, k_len], True = may attend.

  Returns:
    [batch, q_len, heads, head_dim] in q's dtype.
  """
  use_dropout = dropout_rate > 0.0 and not deterministic
  if not use_dropout:
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)
  if dropout_rng is None:
    raise ValueError("attend: dropout_rng is required when dropout is active")
  q_len, k_len, head_dim = q.shape[1], k.shape[1], q.shape[-1]
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  logits = logits / math.sqrt(head_dim)
  allowed = attention_bias_mask(q_len, k_len, causal, mask)
  if allowed is not None:
    logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  probs = dropout(dropout_rng, dropout_rate, probs).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v)
