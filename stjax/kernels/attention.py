"""XLA attention kernels, heads-first: the dense score tensor, and blockwise (online softmax).

Inputs are heads-first with the query heads that share a K/V head stacked along the query axis:
qh [b, kv_heads, groups * q_len, d], kh, vh [b, kv_heads, k_len, d] (`stjax.layers.attention.attend`
lays them out). `dense_attention` builds the [b, n, R, k] float32 scores; `blockwise_attention`
walks the keys in blocks with an online softmax and recomputes the probabilities in the backward
(FlashAttention's algorithm in plain JAX), so memory is linear in the sequence length. Both trace
under the named scope `BLOCKWISE_SCOPE` / none, so a compiled program shows which one ran.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from stjax.kernels.dropout import dropout
from stjax.kernels.masks import attention_bias_mask, stack_groups

KEY_BLOCK = 512  # keys per block of the blockwise path.
SCORE_BYTES_LIMIT = 1 << 26  # `attend` goes blockwise when the float32 scores would exceed 64 MiB.
BLOCKWISE_SCOPE = "stjax_blockwise_attention"  # named scope of blockwise calls (found in the HLO).


def dense_attention(qh, kh, vh, causal, q_len, mask, kv_heads, groups, dropout_rng, dropout_rate):
  """Heads-first [b, n, g * q, d] attention through the full [b, n, g * q, k] score tensor."""
  k_len = kh.shape[2]
  logits = _block_logits(qh, kh)
  allowed = attention_bias_mask(q_len, k_len, causal, mask)
  if allowed is not None:
    logits = jnp.where(stack_groups(allowed, kv_heads, groups), logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  if dropout_rng is not None:
    probs = dropout(dropout_rng, dropout_rate, probs)
  return jnp.einsum("bnqk,bnkd->bnqd", probs.astype(vh.dtype), vh)  # [b, n, g * q, d]


def blockwise_attention(
  qh: jax.Array, kh: jax.Array, vh: jax.Array, *, causal: bool, q_len: int, key_block: int
) -> jax.Array:
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

  with jax.named_scope(BLOCKWISE_SCOPE):
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
    m, l, acc = carry  # [b, n, R], [b, n, R], [b, n, R, d]
    j, kj, vj = block
    allowed = _block_allowed(j, key_block, rows, causal, q_len, k_len)
    s = _block_logits(qh, kj)
    m_new = jnp.maximum(m, jnp.max(s if allowed is None else jnp.where(allowed, s, low), axis=-1))
    p = jnp.exp(s - m_new[..., None])
    if allowed is not None:  # masked keys of a row with no key seen yet would give exp(0) = 1
      p = jnp.where(allowed, p, 0.0)
    rescale = jnp.exp(m - m_new)
    l = l * rescale + p.sum(-1)
    acc = acc * rescale[..., None] + jnp.einsum(
      "bnrk,bnkd->bnrd", p.astype(vj.dtype), vj, preferred_element_type=jnp.float32
    )
    return (m_new, l, acc), None

  shape = qh.shape[:3]
  init = (jnp.full(shape, low), jnp.zeros(shape), jnp.zeros(qh.shape, jnp.float32))
  (m, l, acc), _ = jax.lax.scan(step, init, (jnp.arange(kb.shape[0]), kb, vb))
  seen = l > 0  # False: the row may see no key
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
