"""Memory levers (docs/scaling.md): per-block remat, frozen params stored in bf16, bf16 end to end.

Remat must not change the mathematics: the same training losses as without it (only the order of
float operations may differ). Frozen-bf16 must store exactly the frozen floating leaves in bf16,
keep the trainable ones float32 with their optimizer state, never change the frozen ones, and
train like float32 storage up to bf16 rounding of those weights.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY_ST_LINK, load_config

from stjax.data.windows import TRAIN_KEYS
from stjax.errors import UserError
from stjax.models.backbones.bert import Bert, BertConfig
from stjax.train.experiment import build_experiment
from stjax.train.step import compile_train_step


def _tiny(**overrides):
  c = load_config(TINY_ST_LINK)
  c.model.llm_layers, c.model.unfrozen_layers, c.model.trainable = 2, 1, "pfa(1)"  # 2 blocks, 1 frozen
  for path, value in overrides.items():
    section, field = path.split(".")
    c[section][field] = value
  return c


def _train(config, steps: int = 3):
  exp = build_experiment(config)
  step = compile_train_step(exp)
  train = exp.bundle.splits["train"]
  losses = []
  with exp.context():
    state = exp.init_state()
    first = jax.device_get(state)  # the step donates its input state
    for i in range(steps):
      host = train.batch(np.arange(i * 8, (i + 1) * 8))
      state, m = step(state, {k: jax.device_put(host[k]) for k in TRAIN_KEYS})
      losses.append(float(m["loss"]))
  return losses, exp, first, state


@pytest.mark.parametrize("remat", ["block", "full", "dots_saveable"])
def test_remat_trains_like_no_remat(remat):
  base, _, _, _ = _train(_tiny())
  losses, exp, _, _ = _train(_tiny(**{"model.remat": remat}))
  np.testing.assert_allclose(losses, base, rtol=1e-6)
  assert exp.config.model.remat == remat


@pytest.mark.parametrize("variant", ["stjax", "released"])
def test_sth_sepnet_remat_of_llm_blocks_and_spatial_layers(variant):
  """STH-SepNet: remat covers the language model's blocks and the spatial layers (both spatial
  variants); parameter names and training losses are unchanged, and the backward really
  recomputes (a remat in the program)."""
  from test_kernels import _tiny_sth_sepnet

  def tiny(remat):
    config = _tiny_sth_sepnet()
    config.model.spatial_variant = variant
    config.model.remat = remat
    return config

  base, exp0, _, _ = _train(tiny("none"))
  losses, exp1, _, _ = _train(tiny("full"))
  assert jax.tree.structure(exp1.abstract_state.params) == jax.tree.structure(exp0.abstract_state.params)
  np.testing.assert_allclose(losses, base, rtol=1e-6)
  config = tiny("full")
  assert _remats_in_step(tiny("none")) == 0
  assert _remats_in_step(config) == config.model.llm_layers + config.model.num_layers


def _remats_in_step(config) -> int:
  """Rematerialised calls (`remat2` equations of the backward) in the jaxpr of one train step of `config`."""
  exp = build_experiment(config)
  step = compile_train_step(exp)
  with exp.context():
    state = exp.init_state()
    host = exp.bundle.splits["train"].batch(np.arange(8))
    jaxpr = step.trace(state, {k: jax.device_put(host[k]) for k in TRAIN_KEYS}).jaxpr
  return str(jaxpr).count("remat2[")


def test_bert_remat_gradients_equal():
  """BERT layers under remat: the same outputs and parameter gradients as without (dropout on,
  same key: the recomputed forward draws the same masks)."""
  cfg = BertConfig(
    vocab_size=16, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
  )
  x = jax.random.normal(jax.random.key(1), (2, 5, 16))
  params = Bert(cfg).init(jax.random.key(0), x)

  def grads(c):
    f = lambda p: jnp.sum(Bert(c).apply(p, x, deterministic=False, rngs={"dropout": jax.random.key(2)}) ** 2)
    return jax.value_and_grad(f)(params)

  (v0, g0), (v1, g1) = grads(cfg), grads(cfg.replace(remat="full"))
  np.testing.assert_allclose(v1, v0, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g1, g0)


def test_unknown_remat_is_a_user_error():
  with pytest.raises(UserError, match="config.model.remat: 'sometimes' is not none, block, full"):
    build_experiment(_tiny(**{"model.remat": "sometimes"}))


def test_frozen_params_stored_in_bfloat16():
  base, _, _, _ = _train(_tiny())
  losses, exp, first, last = _train(_tiny(**{"train.frozen_dtype": "bfloat16"}))
  flat_mask = jax.tree_util.tree_leaves_with_path(exp.trainable)
  flat_first = jax.tree.leaves(first.params)
  flat_last = jax.tree.leaves(last.params)
  frozen = [(p, a, b) for (p, t), a, b in zip(flat_mask, flat_first, flat_last) if not t]
  assert frozen and all(a.dtype == jnp.bfloat16 for _, a, _ in frozen)  # e.g. llm/h_0/mlp/c_fc/kernel
  for _, a, b in frozen:
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))  # never change
  trainable = [a for (_, t), a in zip(flat_mask, flat_last) if t]
  assert all(a.dtype == jnp.float32 for a in trainable)
  assert jax.tree.leaves(exp.abstract_state.params)[0].dtype in (jnp.float32, jnp.bfloat16)
  # bf16 rounding of the frozen weights (relative 2^-9) moves the loss a little, not more.
  np.testing.assert_allclose(losses, base, rtol=2e-3)
  assert losses != base


def test_bfloat16_end_to_end_trains_close_to_float32():
  base, _, _, _ = _train(_tiny())
  levers = {"train.compute_dtype": "bfloat16", "model.dtype": "bfloat16", "train.frozen_dtype": "bfloat16"}
  losses, _, _, last = _train(_tiny(**levers))
  assert all(np.isfinite(losses))
  np.testing.assert_allclose(losses, base, rtol=3e-2)
  assert jax.tree.leaves(last.opt_state)[1].dtype == jnp.float32  # optimizer moments stay float32
