"""stjax.layers.attention.attend against a float64 NumPy reference: causal offsets, boolean masks,
grouped-query heads, attention dropout (with the same keep mask), gradients, bad head counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stjax.layers import attention
from stjax.layers.dropout import keep_mask, keep_probability


def reference(q, k, v, *, causal, mask=None, keep=None, rate=0.0):
  """float64 softmax(q k^T / sqrt(d)) v; K/V head h // (H / H_kv) serves query head h (repeat_kv)."""
  q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
  b, tq, h, d = q.shape
  tk, hk = k.shape[1], k.shape[2]
  k, v = np.repeat(k, h // hk, axis=2), np.repeat(v, h // hk, axis=2)
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
  allowed = np.ones((1, 1, tq, tk), bool)
  if causal:
    allowed = allowed & (np.arange(tk)[None, :] <= np.arange(tq)[:, None] + tk - tq)
  if mask is not None:
    allowed = allowed & np.asarray(mask)
  logits = np.where(allowed, logits, -np.inf)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  if keep is not None:
    probs = np.where(keep, probs / keep_probability(rate), 0.0)
  return np.einsum("bhqk,bkhd->bqhd", probs, v)


def _qkv(rng, b=2, tq=23, tk=23, h=6, hk=6, d=8):
  return (
    jnp.asarray(rng.standard_normal(s).astype(np.float32))
    for s in ((b, tq, h, d), (b, tk, hk, d), (b, tk, hk, d))
  )


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("kv_heads", [6, 3, 1])
def test_matches_float64_reference(rng, causal, kv_heads):
  q, k, v = _qkv(rng, hk=kv_heads)
  got = attention.attend(q, k, v, causal=causal)
  np.testing.assert_allclose(np.asarray(got), reference(q, k, v, causal=causal), atol=2e-6, rtol=1e-5)


def test_causal_offset_and_masks(rng):
  """Fewer queries than keys (decoding offset) and masks per batch row or per head."""
  q, k, v = _qkv(rng, tq=7, tk=19, hk=2)
  per_row = jnp.asarray(rng.random((2, 1, 7, 19)) < 0.7).at[..., 0].set(True)
  per_head = jnp.asarray(rng.random((1, 6, 7, 19)) < 0.7).at[..., 0].set(True)
  for causal in (True, False):
    for mask in (per_row, per_head):
      got = attention.attend(q, k, v, causal=causal, mask=mask)
      np.testing.assert_allclose(
        np.asarray(got), reference(q, k, v, causal=causal, mask=mask), atol=2e-6, rtol=1e-5
      )


def test_dropout_drops_the_probabilities_with_the_keep_mask(rng):
  q, k, v = _qkv(rng, hk=3)
  key, rate = jax.random.key(3), 0.3
  got = attention.attend(q, k, v, causal=True, dropout_rate=rate, deterministic=False, dropout_rng=key)
  keep = np.asarray(keep_mask(key, rate, (2, 6, 23, 23)))  # [b, heads, q, k], heads in query order
  assert 0.6 < keep.mean() < 0.8
  want = reference(q, k, v, causal=True, keep=keep, rate=rate)
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-6, rtol=1e-5)
  same = attention.attend(q, k, v, causal=True, dropout_rate=rate, deterministic=True, dropout_rng=key)
  np.testing.assert_allclose(np.asarray(same), reference(q, k, v, causal=True), atol=2e-6, rtol=1e-5)


def test_gradients_match_jax_dot_product_attention(rng):
  """An independent implementation (jax.nn.dot_product_attention, K/V repeated) for the VJP."""
  q, k, v = _qkv(rng, hk=2)
  cot = jnp.asarray(rng.standard_normal(q.shape).astype(np.float32))

  def ours(q, k, v):
    return jnp.sum(attention.attend(q, k, v, causal=True) * cot)

  def theirs(q, k, v):
    k, v = jnp.repeat(k, 3, axis=2), jnp.repeat(v, 3, axis=2)
    return jnp.sum(jax.nn.dot_product_attention(q, k, v, is_causal=True) * cot)

  for got, want in zip(jax.grad(ours, (0, 1, 2))(q, k, v), jax.grad(theirs, (0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-4)


def test_bad_arguments(rng):
  q, k, v = _qkv(rng, hk=4)
  with pytest.raises(ValueError, match="6 query heads are not a multiple of 4"):
    attention.attend(q, k, v, causal=False)
  q, k, v = _qkv(rng)
  with pytest.raises(ValueError, match="dropout_rng is required"):
    attention.attend(q, k, v, causal=False, dropout_rate=0.1, deterministic=False)


def reference_vjp(q, k, v, cot, *, causal):
  """float64 gradients of sum(attention * cot) w.r.t. q, k, v (the softmax Jacobian written out)."""
  q, k, v, cot = (np.asarray(t, np.float64) for t in (q, k, v, cot))
  b, tq, h, d = q.shape
  tk, hk = k.shape[1], k.shape[2]
  g = h // hk
  kr, vr = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
  logits = np.einsum("bqhd,bkhd->bhqk", q, kr) / np.sqrt(d)
  if causal:
    logits = np.where(np.arange(tk)[None, :] <= np.arange(tq)[:, None] + tk - tq, logits, -np.inf)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  dp = np.einsum("bqhd,bkhd->bhqk", cot, vr)
  ds = p * (dp - (dp * p).sum(-1, keepdims=True)) / np.sqrt(d)
  dq = np.einsum("bhqk,bkhd->bqhd", ds, kr)
  dk = np.einsum("bhqk,bqhd->bkhd", ds, q).reshape(b, tk, hk, g, d).sum(3)
  dv = np.einsum("bhqk,bqhd->bkhd", p, cot).reshape(b, tk, hk, g, d).sum(3)
  return dq, dk, dv


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
  "kv_heads,tq,tk,key_block", [(6, 23, 23, 8), (2, 7, 19, 4), (1, 23, 23, 23), (3, 5, 5, 16)]
)
def test_blockwise_matches_float64_reference(rng, causal, kv_heads, tq, tk, key_block):
  """The blockwise path: blocks that do not divide k_len (zero padding), one block, a block larger
  than k_len, causal offsets, grouped-query heads; outputs and all three gradients against float64."""
  q, k, v = _qkv(rng, tq=tq, tk=tk, hk=kv_heads)
  cot = jnp.asarray(rng.standard_normal(q.shape).astype(np.float32))
  run = lambda q, k, v: attention.attend(q, k, v, causal=causal, key_block=key_block)  # noqa: E731
  out, vjp = jax.vjp(run, q, k, v)
  np.testing.assert_allclose(np.asarray(out), reference(q, k, v, causal=causal), atol=2e-6, rtol=1e-5)
  for got, want in zip(vjp(cot), reference_vjp(q, k, v, cot, causal=causal)):
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=1e-4)


def test_long_sequences_go_blockwise_without_the_score_tensor(rng, monkeypatch):
  """Above SCORE_BYTES_LIMIT (lowered here) `attend` picks the blockwise path by itself: the same
  numbers as the dense path, and no [b, heads, q, k] array in the compiled forward + backward."""
  monkeypatch.setattr(attention, "KEY_BLOCK", 16)
  q, k, v = _qkv(rng, b=1, tq=96, tk=96, h=2, hk=2)
  loss = lambda q, k, v: jnp.sum(jnp.sin(attention.attend(q, k, v, causal=False)))  # noqa: E731
  results = {}
  scores = 4 * 1 * 2 * 96 * 96  # bytes of the float32 [b, heads, q, k] scores
  for name, limit in (("blockwise", scores - 1), ("dense", scores)):
    monkeypatch.setattr(attention, "SCORE_BYTES_LIMIT", limit)  # read when the step is traced
    step = jax.jit(jax.value_and_grad(loss, (0, 1, 2))).lower(q, k, v).compile()
    results[name] = step(q, k, v), step.as_text()
  assert "f32[1,2,96,96]" not in results["blockwise"][1] and "f32[1,2,96,16]" in results["blockwise"][1]
  assert "f32[1,2,96,96]" in results["dense"][1]
  (lb, gb), (ld, gd) = results["blockwise"][0], results["dense"][0]
  np.testing.assert_allclose(float(lb), float(ld), rtol=1e-5)
  for a, d in zip(gb, gd):
    np.testing.assert_allclose(np.asarray(a), np.asarray(d), atol=1e-5, rtol=1e-4)
  with pytest.raises(ValueError, match="neither a mask nor attention dropout"):
    attention.attend(q, k, v, causal=False, key_block=16, mask=jnp.ones((1, 1, 96, 96), bool))


def test_blockwise_memory_is_linear_in_the_sequence(rng):
  """Compiled forward + backward temporaries at 2T are about twice those at T (the dense path's
  grow 4x): no block's scores outlive its step."""

  def temp(t, key_block):
    q = jnp.zeros((1, t, 2, 16))
    kernel = "xla" if key_block else "xla_dense"  # xla_dense: dense at any size
    f = jax.jit(
      jax.grad(
        lambda q, k, v: jnp.sum(attention.attend(q, k, v, causal=True, key_block=key_block, kernel=kernel)),
        (0, 1, 2),
      )
    )
    return f.lower(q, q, q).compile().memory_analysis().temp_size_in_bytes

  blockwise = temp(4096, 128) / temp(2048, 128)
  dense = temp(4096, None) / temp(2048, None)
  assert blockwise < 2.5 and dense > 3.5, (blockwise, dense)


def test_blockwise_rows_without_keys_and_bfloat16(rng):
  """Causal with more queries than keys: rows that may see no key give 0 and zero gradients, the
  others the float64 answer, and nothing turns NaN. bfloat16 in, bfloat16 out and gradients."""
  q, k, v = _qkv(rng, tq=11, tk=5, h=4, hk=2)
  cot = jnp.asarray(rng.standard_normal(q.shape).astype(np.float32))
  out, vjp = jax.vjp(lambda q, k, v: attention.attend(q, k, v, causal=True, key_block=2), q, k, v)
  grads = vjp(cot)
  empty = slice(0, 6)  # query i sees keys j <= i - 6
  np.testing.assert_array_equal(np.asarray(out)[:, empty], 0.0)
  np.testing.assert_allclose(
    np.asarray(out)[:, 6:], reference(q[:, 6:], k, v, causal=True), atol=2e-6, rtol=1e-5
  )
  masked_cot = cot.at[:, empty].set(0.0)  # empty rows contribute nothing to the gradients
  want = reference_vjp(q[:, 6:], k, v, masked_cot[:, 6:], causal=True)
  np.testing.assert_array_equal(np.asarray(grads[0])[:, empty], 0.0)
  np.testing.assert_allclose(np.asarray(grads[0])[:, 6:], want[0], atol=2e-5, rtol=1e-4)
  for got, w in zip(grads[1:], want[1:]):
    np.testing.assert_allclose(np.asarray(got), w, atol=2e-5, rtol=1e-4)
  qb, kb, vb = (t.astype(jnp.bfloat16) for t in _qkv(rng, tq=16, tk=16, hk=2))
  out, vjp = jax.vjp(lambda q, k, v: attention.attend(q, k, v, causal=False, key_block=8), qb, kb, vb)
  assert out.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in vjp(out))
  np.testing.assert_allclose(np.asarray(out, np.float32), reference(qb, kb, vb, causal=False), atol=2e-2)
