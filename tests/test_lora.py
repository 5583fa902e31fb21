"""LoRA: adapters only where the path regex says, a fresh adapter is a no-op, training moves only
the adapters, merging into the kernels gives the same outputs, export merges."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from stjax.convert import hf_gpt2
from stjax.layers.lora import LoRADense, merge_lora
from stjax.models.backbones.gpt2 import GPT2, GPT2Config
from stjax.train import optim

SHAPE = dict(vocab_size=11, n_positions=64, n_embd=16, n_head=2, n_layer=2)


def _pretrained(rng):
  cfg = GPT2Config(**SHAPE)
  shapes = nn.unbox(jax.eval_shape(GPT2(cfg).init, jax.random.key(1), jnp.zeros((1, 4, 16)))["params"])
  return jax.tree_util.tree_map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32), shapes)


def _init(model, x):
  return nn.unbox(jax.jit(model.init)(jax.random.key(0), x)["params"])


def test_lora_dense_math(rng):
  x = rng.standard_normal((3, 5, 6)).astype(np.float32)
  layer = LoRADense(4, kernel_axes=("embed", "mlp"), rank=2, alpha=3.0)
  p = jax.tree_util.tree_map(
    lambda v: rng.standard_normal(v.shape).astype(np.float32),
    nn.unbox(jax.eval_shape(layer.init, jax.random.key(0), x)["params"]),
  )
  got = np.asarray(layer.apply({"params": p}, x))
  want = x @ p["kernel"] + p["bias"] + 1.5 * (x @ p["lora_a"]) @ p["lora_b"]
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_adapters_where_selected_and_fresh_adapters_are_a_no_op(rng):
  pretrained = _pretrained(rng)
  cfg = GPT2Config(**SHAPE, lora_rank=4, lora_alpha=8.0, lora_targets=r"attn/c_attn|mlp/c_fc")
  x = jnp.asarray(rng.standard_normal((2, 30, 16)).astype(np.float32))
  init = _init(GPT2(cfg), x)
  for i in range(2):
    block = init[f"h_{i}"]
    assert set(block["attn"]["c_attn"]) == set(block["mlp"]["c_fc"]) == {"kernel", "bias", "lora_a", "lora_b"}
    assert set(block["attn"]["c_proj"]) == set(block["mlp"]["c_proj"]) == {"kernel", "bias"}
  params = hf_gpt2.overlay(init, pretrained)
  a = params["h_0"]["attn"]["c_attn"]["lora_a"]
  np.testing.assert_array_equal(a, init["h_0"]["attn"]["c_attn"]["lora_a"])  # left at init
  assert np.abs(a).max() <= 1 / 4 + 1e-7 and np.abs(a).min() > 0  # U(-1/sqrt(16), 1/sqrt(16))
  assert not np.any(params["h_0"]["attn"]["c_attn"]["lora_b"])
  base = GPT2(GPT2Config(**SHAPE)).apply({"params": pretrained}, x)
  np.testing.assert_array_equal(np.asarray(GPT2(cfg).apply({"params": params}, x)), np.asarray(base))


def test_training_moves_only_adapters_and_merge_is_exact(rng):
  cfg = GPT2Config(**SHAPE, lora_rank=2, lora_alpha=4.0)
  model = GPT2(cfg)
  x = jnp.asarray(rng.standard_normal((2, 20, 16)).astype(np.float32))
  y = jnp.asarray(rng.standard_normal((2, 20, 16)).astype(np.float32))
  params = hf_gpt2.overlay(_init(model, x), _pretrained(rng))
  mask = optim.trainable_mask(params, "lora")
  ocfg = optim.default_optim_config()
  ocfg.update(learning_rate=1e-2, weight_decay=0.1)
  tx, _ = optim.make_optimizer(ocfg, params, mask)
  state = tx.init(params)

  @jax.jit
  def step(p, s):
    grads = jax.grad(lambda q: jnp.mean((model.apply({"params": q}, x) - y) ** 2))(p)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s

  new = params
  for _ in range(3):
    new, state = step(new, state)
  for (path, flag), old, now in zip(
    jax.tree_util.tree_leaves_with_path(mask),
    jax.tree_util.tree_leaves(params),
    jax.tree_util.tree_leaves(new),
  ):
    name = path[-1].key
    assert flag == (name in ("lora_a", "lora_b"))
    if flag:
      assert np.abs(np.asarray(now) - old).max() > 0, path
    else:
      np.testing.assert_array_equal(np.asarray(now), old, err_msg=str(path))
  assert np.abs(np.asarray(new["h_1"]["mlp"]["c_proj"]["lora_b"])).min() > 0  # B really trains
  unmerged = np.asarray(model.apply({"params": new}, x))
  merged = merge_lora(new, alpha=cfg.lora_scale_alpha)
  assert "lora_a" not in merged["h_0"]["attn"]["c_attn"]
  plain = np.asarray(GPT2(cfg.replace(lora_rank=0)).apply({"params": merged}, x))
  np.testing.assert_allclose(plain, unmerged, atol=1e-5)
  kept = merge_lora(new, alpha=cfg.lora_scale_alpha, keep_adapters=True)
  np.testing.assert_allclose(np.asarray(model.apply({"params": kept}, x)), unmerged, atol=1e-5)
  # Export to HF merges the adapters into the Conv1D weights.
  tensors = hf_gpt2.to_hf_tensors(cfg, new)
  np.testing.assert_array_equal(
    tensors["h.0.attn.c_attn.weight"], np.asarray(merged["h_0"]["attn"]["c_attn"]["kernel"])
  )
