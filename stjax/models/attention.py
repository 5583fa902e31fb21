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
"""

from __future__ import annotations

import contextlib
import functools
import math

import jax
import jax.numpy as jnp

from stjax.models.dropout import dropout

KEY_BLOCK = 512  # keys per block of the blockwise path.
SCORE_BYTES_LIMIT = 1 << 26  # `attend` goes blockwise when the float32 scores would exceed 64 MiB.
_blockwise_traces = 0  # blockwise calls traced so far in this process (see `blockwise_traces`).


def blockwise_traces() -> int:
  """How many `attend` calls have been traced on the blockwise path in this process. XLA's cost
  analysis counts a scan body once, so `stjax.bench` re-costs a step that used it with
  `dense_scores` to report the model's FLOPs."""
  return _blockwise_traces


@contextlib.contextmanager
def dense_scores():
  """Within the block, automatic `attend` calls keep the dense scores (for FLOP counting)."""
  global SCORE_BYTES_LIMIT
  saved, SCORE_BYTES_LIMIT = SCORE_BYTES_LIMIT, float("inf")
  try:
    yield
  finally:
    SCORE_BYTES_LIMIT = saved


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
    key_block: int | None = None,
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
  # Heads-first; the query heads sharing a K/V head are stacked along the query axis, so both
  # products are [batch, kv_heads]-batched matmuls (a separate group axis is ~1.4x slower on XLA CPU).
  qh = q.reshape(b, q_len, kv_heads, groups, head_dim).transpose(0, 2, 3, 1, 4)
  qh = qh.reshape(b, kv_heads, groups * q_len, head_dim)
  kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [b, n, k, d]
  score_bytes = 4 * b * heads * q_len * k_len  # of the whole batch as traced (not per device)
  if key_block is None and mask is None and not use_dropout and score_bytes > SCORE_BYTES_LIMIT:
    key_block = KEY_BLOCK
  if key_block is not None:
    if mask is not None or use_dropout:
      raise ValueError("attend: the blockwise path supports neither a mask nor attention dropout")
    global _blockwise_traces
    _blockwise_traces += 1
    out = blockwise_attention(qh, kh, vh, causal=causal, q_len=q_len, key_block=key_block)
  else:
    rng = dropout_rng if use_dropout else None
    out = _dense_attention(qh, kh, vh, causal, q_len, mask, kv_heads, groups, rng, dropout_rate)
  out = out.reshape(b, kv_heads, groups, q_len, head_dim).transpose(0, 3, 1, 2, 4)
  return out.reshape(b, q_len, heads, head_dim)


def _dense_attention(qh, kh, vh, causal, q_len, mask, kv_heads, groups, dropout_rng, dropout_rate):
  """Heads-first [b, n, g * q, d] attention through the full [b, n, g * q, k] score tensor."""
  k_len = kh.shape[2]
  logits = _block_logits(qh, kh)
  allowed = attention_bias_mask(q_len, k_len, causal, mask)
  if allowed is not None:
    logits = jnp.where(_stack_groups(allowed, kv_heads, groups), logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  if dropout_rng is not None:
    probs = dropout(dropout_rng, dropout_rate, probs)
  return jnp.einsum("bnqk,bnkd->bnqd", probs.astype(vh.dtype), vh)  # [b, n, g * q, d]


def blockwise_attention(qh: jax.Array, kh: jax.Array, vh: jax.Array, *, causal: bool, q_len: int,
                        key_block: int) -> jax.Array:
  """Heads-first attention in key blocks, memory linear in the sequence length.

  qh: [b, n, R, d] with R = groups * q_len (query row r is at position r % q_len); kh, vh:
  [b, n, k_len, d]. Returns [b, n, R, d] in vh's dtype (as the dense path). The forward keeps a
  running max and sum (online softmax) over the key blocks and saves only the output and the
  rows' log-sum-exp; the backward recomputes each block's probabilities from them
  (FlashAttention's backward). A query row that may see no key (causal with q_len > k_len) gets
  0 and zero gradients.

  The blocks are a `lax.scan` over zero-padded, equal blocks: a static Python loop lets XLA
  schedule every block's q k^T before the first softmax, which made memory quadratic again.
  XLA's cost analysis counts a scan body once, so FLOP counts of compiled steps leave out all but
  one block of such calls. Forward-mode autodiff (jvp) is not defined through the custom VJP.
  """
  if key_block < 1:
    raise ValueError(f"attend: key_block must be >= 1, got {key_block}")
  k_len = kh.shape[2]
  blocks = -(-k_len // key_block)
  pad = [(0, 0), (0, 0), (0, blocks * key_block - k_len), (0, 0)]

  def to_blocks(x):  # [b, n, k_len, d] -> [blocks, b, n, key_block, d], zero-padded
    return jnp.pad(x, pad).reshape(*x.shape[:2], blocks, key_block, x.shape[-1]).transpose(2, 0, 1, 3, 4)

  return _blockwise(qh, to_blocks(kh), to_blocks(vh), causal, q_len, k_len)


def _block_allowed(j, key_block: int, rows: int, causal: bool, q_len: int, k_len: int) -> jax.Array | None:
  """[rows | 1, key_block] bool: which keys of block j each query row may see (padding excluded);
  None when every row sees every key (not causal, no padding): no masking work at all."""
  if not causal and k_len % key_block == 0:
    return None
  key_pos = j * key_block + jnp.arange(key_block)
  allowed = (key_pos < k_len)[None]
  if causal:
    query_pos = jnp.arange(rows) % q_len + (k_len - q_len)
    allowed = allowed & (key_pos[None] <= query_pos[:, None])
  return allowed


def _block_logits(qh, kj):
  """[b, n, R, d] x [b, n, k, d] -> float32 logits [b, n, R, k], scaled by 1 / sqrt(d)."""
  return jnp.einsum("bnrd,bnkd->bnrk", qh, kj, preferred_element_type=jnp.float32) / math.sqrt(qh.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _blockwise(qh, kb, vb, causal: bool, q_len: int, k_len: int):
  return _blockwise_fwd(qh, kb, vb, causal, q_len, k_len)[0]


def _blockwise_fwd(qh, kb, vb, causal, q_len, k_len):
  """kb, vb: [blocks, b, n, key_block, d], zero-padded past k_len."""
  rows, key_block = qh.shape[2], kb.shape[3]
  low = jnp.finfo(jnp.float32).min

  def step(carry, block):
    m, l, acc = carry                                      # [b, n, R], [b, n, R], [b, n, R, d]
    j, kj, vj = block
    allowed = _block_allowed(j, key_block, rows, causal, q_len, k_len)
    s = _block_logits(qh, kj)
    m_new = jnp.maximum(m, jnp.max(s if allowed is None else jnp.where(allowed, s, low), axis=-1))
    p = jnp.exp(s - m_new[..., None])
    if allowed is not None:  # masked keys of a row with no key seen yet would give exp(0) = 1
      p = jnp.where(allowed, p, 0.0)
    rescale = jnp.exp(m - m_new)
    l = l * rescale + p.sum(-1)
    acc = acc * rescale[..., None] + jnp.einsum("bnrk,bnkd->bnrd", p.astype(vj.dtype), vj,
                                                preferred_element_type=jnp.float32)
    return (m_new, l, acc), None

  shape = qh.shape[:3]
  init = (jnp.full(shape, low), jnp.zeros(shape), jnp.zeros(qh.shape, jnp.float32))
  (m, l, acc), _ = jax.lax.scan(step, init, (jnp.arange(kb.shape[0]), kb, vb))
  seen = l > 0                                             # False: the row may see no key
  out = jnp.where(seen[..., None], acc / jnp.where(seen, l, 1.0)[..., None], 0.0).astype(vb.dtype)
  lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), jnp.inf)  # exp(s - inf) = 0 in the backward
  return out, (qh, kb, vb, out, lse)


def _blockwise_bwd(causal, q_len, k_len, res, d_out):
  qh, kb, vb, out, lse = res
  rows, key_block = qh.shape[2], kb.shape[3]
  scale = 1.0 / math.sqrt(qh.shape[-1])
  d_out32, q32 = d_out.astype(jnp.float32), qh.astype(jnp.float32)  # cast once, not per block
  delta = jnp.sum(d_out32 * out.astype(jnp.float32), axis=-1)  # [b, n, R]: rowsum(dO * O)

  def step(dq, block):
    j, kj, vj = block
    allowed = _block_allowed(j, key_block, rows, causal, q_len, k_len)
    p = jnp.exp(_block_logits(qh, kj) - lse[..., None])  # [b, n, R, block]; 0 for rows seeing no key
    if allowed is not None:
      p = jnp.where(allowed, p, 0.0)
    dv = jnp.einsum("bnrk,bnrd->bnkd", p, d_out32)
    dp = jnp.einsum("bnrd,bnkd->bnrk", d_out32, vj.astype(jnp.float32))
    ds = p * (dp - delta[..., None]) * scale
    dq = dq + jnp.einsum("bnrk,bnkd->bnrd", ds, kj.astype(jnp.float32))
    dk = jnp.einsum("bnrk,bnrd->bnkd", ds, q32)
    return dq, (dk.astype(kb.dtype), dv.astype(vb.dtype))

  dq, (dkb, dvb) = jax.lax.scan(step, jnp.zeros(qh.shape, jnp.float32), (jnp.arange(kb.shape[0]), kb, vb))
  return dq.astype(qh.dtype), dkb, dvb


_blockwise.defvjp(_blockwise_fwd, _blockwise_bwd)
