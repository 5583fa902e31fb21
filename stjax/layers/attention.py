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

Calls whose float32 score tensor [batch, heads, q, k] would exceed `SCORE_BYTES_LIMIT` and that
have no mask or dropout (ST-LINK's N*P tokens on large graphs or large batches) go blockwise
(`blockwise_attention`): keys in blocks of `KEY_BLOCK`, an online softmax in the forward and the
probabilities recomputed block by block in the backward (FlashAttention's algorithm in plain JAX),
so memory is linear in the sequence length instead of the [batch, heads, q, k] score tensor.

`kernel="splash"` (TPU Pallas) and `kernel="cudnn"` (GPU) hand the call to a fused kernel
(`stjax.kernels.fused_attention`) in the same layout; they have no attention dropout and no
arbitrary masks, and such a call is a ValueError naming the config field (never a fallback).
Splash runs under `shard_map` with the mesh axes the logical axis rules give batch, nodes (the
token sequence) and heads.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from stjax.kernels.attention import KEY_BLOCK, SCORE_BYTES_LIMIT, blockwise_attention, dense_attention
from stjax.kernels.choice import ATTENTION_KERNELS
from stjax.kernels.fused_attention import cudnn_attention, splash_attention

# q's logical axes under the active rules, for the splash kernel's shard_map: [batch, seq, heads, d].
_SPLASH_LOGICAL = {"batch": "batch", "seq": "nodes", "heads": "heads", "kv_heads": "kv_heads"}


def _mesh_axes_of_logical() -> dict:
  """{"batch": mesh axes, "seq": ..., "heads": ..., "kv_heads": ...} from the active logical axis
  rules (`nn.logical_axis_rules`), {} when none are active."""
  rules = dict(nn.get_logical_axis_rules())
  return {key: rules.get(name) for key, name in _SPLASH_LOGICAL.items()} if rules else {}


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
  key_block: int | None = None,
  kernel: str = "xla",
  pallas_interpret: bool = False,
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
    key_block: None = automatic (blockwise with `KEY_BLOCK` when the float32 scores would exceed
      `SCORE_BYTES_LIMIT` and there is neither a mask nor active dropout, else the dense score
      tensor); an int forces the blockwise path with blocks of that many keys (a ValueError with
      a mask or active dropout).
    kernel: "xla" (the automatic choice above), "xla_dense" (always the dense score tensor, e.g.
      to count a step's FLOPs: XLA costs a scan body once), "splash" or "cudnn" (fused kernels, no
      dropout or mask); from `config.kernels.attention`.
    pallas_interpret: run Pallas kernels (splash) in the interpreter (`config.kernels.pallas`).

  Returns:
    [batch, q_len, heads, head_dim] in v's dtype. Softmax in float32.
  """
  b, q_len, heads, head_dim = q.shape
  k_len, kv_heads = k.shape[1], k.shape[2]
  if heads % kv_heads:
    raise ValueError(f"attend: {heads} query heads are not a multiple of {kv_heads} key/value heads")
  use_dropout = dropout_rate > 0.0 and not deterministic
  if use_dropout and dropout_rng is None:
    raise ValueError("attend: dropout_rng is required when dropout is active")
  groups = heads // kv_heads
  if kernel not in ATTENTION_KERNELS:
    raise ValueError(f"attend: kernel {kernel!r} is not one of {', '.join(ATTENTION_KERNELS)}")
  if kernel in ("splash", "cudnn"):
    if use_dropout:
      raise ValueError(
        f"attend: the {kernel} kernel has no attention dropout (rate {dropout_rate}); set "
        "config.model.attention_dropout=0 or config.kernels.attention=xla"
      )
    if kernel == "cudnn":
      return cudnn_attention(q, k, v, causal=causal, mask=mask)
    if mask is not None:
      raise ValueError(
        "attend: the splash kernel takes no mask (only full or causal); use config.kernels.attention=xla"
      )
    partition = _mesh_axes_of_logical()
    return splash_attention(q, k, v, causal=causal, partition=partition, interpret=pallas_interpret)
  # Heads-first; the query heads sharing a K/V head are stacked along the query axis, so both
  # products are [batch, kv_heads]-batched matmuls (a separate group axis is ~1.4x slower on XLA CPU).
  qh = q.reshape(b, q_len, kv_heads, groups, head_dim).transpose(0, 2, 3, 1, 4)
  qh = qh.reshape(b, kv_heads, groups * q_len, head_dim)
  kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [b, n, k, d]
  score_bytes = 4 * b * heads * q_len * k_len  # of the whole batch as traced (not per device)
  automatic = key_block is None and kernel == "xla" and mask is None and not use_dropout
  if automatic and score_bytes > SCORE_BYTES_LIMIT:
    key_block = KEY_BLOCK
  if key_block is not None:
    if mask is not None or use_dropout:
      raise ValueError("attend: the blockwise path supports neither a mask nor attention dropout")
    out = blockwise_attention(qh, kh, vh, causal=causal, q_len=q_len, key_block=key_block)
  else:
    rng = dropout_rng if use_dropout else None
    out = dense_attention(qh, kh, vh, causal, q_len, mask, kv_heads, groups, rng, dropout_rate)
  out = out.reshape(b, kv_heads, groups, q_len, head_dim).transpose(0, 3, 1, 2, 4)
  return out.reshape(b, q_len, heads, head_dim)
