"""SE-Attention equals a float64 NumPy reference in `split` and `dual` modes, full and causal."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stjax.errors import UserError
from stjax.models.backbones.gpt2 import GPT2, GPT2Config
from stjax.models.st_link.se_attention import SEAttention, SERotary, rotary_dims


def se_attention_reference(
  h, c_attn, c_proj, time_angles, space_angles, n_head, mode, temporal_dims, causal, merge=None
):
  """float64 NumPy reference of SE-Attention (tests and docs). h: [batch, seq, d]; params as dicts."""
  h = np.asarray(h, np.float64)
  b, s, d = h.shape
  hd = d // n_head
  qkv = h @ np.asarray(c_attn["kernel"], np.float64) + np.asarray(c_attn["bias"], np.float64)
  q, k, v = [x.reshape(b, s, n_head, hd) for x in np.split(qkv, 3, axis=-1)]

  def rot(x, ang):
    half = x.shape[-1] // 2
    c, sn = np.cos(ang)[:, None], np.sin(ang)[:, None]
    return np.concatenate(
      [x[..., :half] * c - x[..., half:] * sn, x[..., :half] * sn + x[..., half:] * c], -1
    )

  ta, sa = np.asarray(time_angles, np.float64), np.asarray(space_angles, np.float64)

  def attn(qr, kr):
    logits = np.einsum("bqhd,bkhd->bhqk", qr, kr) / np.sqrt(hd)
    if causal:
      logits = np.where(np.tril(np.ones((s, s), bool)), logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v).reshape(b, s, d)

  if mode == "split":
    td = temporal_dims
    qr = np.concatenate([rot(q[..., :td], ta), rot(q[..., td:], sa)], -1)
    kr = np.concatenate([rot(k[..., :td], ta), rot(k[..., td:], sa)], -1)
    o = attn(qr, kr)
  else:
    o = np.concatenate([attn(rot(q, ta), rot(k, ta)), attn(rot(q, sa), rot(k, sa))], -1)
    o = o @ np.asarray(merge["kernel"], np.float64)
  return o @ np.asarray(c_proj["kernel"], np.float64) + np.asarray(c_proj["bias"], np.float64)


@pytest.mark.parametrize("mode,causal", [("split", False), ("split", True), ("dual", False), ("dual", True)])
def test_se_attention_matches_numpy(rng, mode, causal):
  cfg = GPT2Config(n_embd=16, n_head=2, n_layer=1, causal=causal, attn_pdrop=0.0, resid_pdrop=0.0)
  nodes, per_node = 3, 4
  seq = nodes * per_node
  time_pos = jnp.asarray(np.tile([-9.0, -6.0, -3.0, 0.0], nodes))
  token_node = jnp.repeat(jnp.arange(nodes), per_node)
  node_emb = jnp.asarray(rng.normal(size=(nodes, 5)), jnp.float32)
  rot = SERotary(head_dim=8, mode=mode, temporal_dims=4)
  rot_vars = rot.init(jax.random.key(1), time_pos, node_emb, token_node)
  angles = rot.apply(rot_vars, time_pos, node_emb, token_node)
  h = jnp.asarray(rng.normal(size=(2, seq, 16)), jnp.float32)
  attn = SEAttention(cfg, mode=mode, temporal_dims=4)
  params = nn.meta.unbox(attn.init(jax.random.key(0), h, deterministic=True, **angles))["params"]
  if mode == "dual":  # move away from the [I/2; I/2] init so the merge is really tested
    params["merge"]["kernel"] = jnp.asarray(rng.normal(size=(32, 16)) * 0.3, jnp.float32)
  got = attn.apply({"params": params}, h, deterministic=True, **angles)
  want = se_attention_reference(
    h,
    params["c_attn"],
    params["c_proj"],
    angles["time_angles"],
    angles["space_angles"],
    2,
    mode,
    4,
    causal,
    params.get("merge"),
  )
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  # Angles: time part is position * omega, space part is the node's phase for every token.
  td = 4 if mode == "split" else 8
  np.testing.assert_allclose(
    angles["time_angles"], np.asarray(time_pos)[:, None] * 10000.0 ** (-np.arange(0, td, 2) / td), rtol=1e-6
  )
  np.testing.assert_array_equal(
    angles["space_angles"][:per_node], np.repeat(angles["space_angles"][:1], per_node, 0)
  )


def test_dual_merge_starts_as_mean_and_split_with_zero_angles_is_gpt2(rng):
  cfg = GPT2Config(n_embd=16, n_head=2, n_layer=1, causal=False, attn_pdrop=0.0, resid_pdrop=0.0)
  h = jnp.asarray(rng.normal(size=(1, 5, 16)), jnp.float32)
  zeros = {"time_angles": jnp.zeros((5, 4)), "space_angles": jnp.zeros((5, 4))}
  dual = SEAttention(cfg, mode="dual", temporal_dims=4)
  p = nn.meta.unbox(dual.init(jax.random.key(0), h, deterministic=True, **zeros))
  plain = {"params": {k: v for k, v in p["params"].items() if k != "merge"}}
  split = SEAttention(cfg, mode="split", temporal_dims=8)
  # With zero angles both modes reduce to plain GPT-2 attention with the same c_attn/c_proj.
  np.testing.assert_allclose(
    dual.apply(p, h, deterministic=True, **zeros),
    split.apply(plain, h, deterministic=True, time_angles=jnp.zeros((5, 4)), space_angles=jnp.zeros((5, 0))),
    rtol=1e-5,
    atol=1e-5,
  )


def test_se_attention_inside_gpt2_blocks(rng):
  cfg = GPT2Config(n_embd=16, n_head=2, n_layer=2, vocab_size=11, n_positions=8, use_wpe=False, causal=False)
  model = GPT2(cfg, attention_factory=lambda i: lambda: SEAttention(cfg, mode="split", temporal_dims=4))
  angles = {
    "time_angles": jnp.asarray(rng.normal(size=(6, 2)), jnp.float32),
    "space_angles": jnp.asarray(rng.normal(size=(6, 2)), jnp.float32),
  }
  x = jnp.asarray(rng.normal(size=(2, 6, 16)), jnp.float32)
  params = nn.meta.unbox(model.init(jax.random.key(0), x, attention_kwargs=angles))
  assert set(params["params"]["h_0"]["attn"]) == {"c_attn", "c_proj"}
  # Sharpen the random-init attention (q.k ~ 0 at std 0.02) so positions matter visibly.
  params = jax.tree_util.tree_map_with_path(
    lambda path, v: v * 30 if "c_attn" in jax.tree_util.keystr(path) else v, params
  )
  out1 = model.apply(params, x, attention_kwargs=angles)
  # A common shift of all angles changes nothing (relative positions); moving one token does.
  shifted = model.apply(params, x, attention_kwargs={**angles, "time_angles": angles["time_angles"] + 1.0})
  moved = model.apply(
    params, x, attention_kwargs={**angles, "time_angles": angles["time_angles"].at[2].add(1.0)}
  )
  np.testing.assert_allclose(shifted, out1, atol=1e-4)
  assert out1.shape == (2, 6, 16) and float(jnp.abs(out1 - moved).max()) > 1e-3


def test_rotary_dims_validation():
  assert rotary_dims(64, "split", 32) == (32, 32)
  assert rotary_dims(64, "dual", 32) == (64, 64)
  with pytest.raises(UserError, match="model.temporal_dims"):
    rotary_dims(64, "split", 3)
  with pytest.raises(UserError, match="model.se_mode"):
    rotary_dims(64, "both", 32)
