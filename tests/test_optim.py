"""Trainability masks, masked optimizers (frozen leaves unchanged, no state), Ranger against a
NumPy reference, schedules, and the PFA(L=6, U=2) count of full-size GPT-2."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from stjax.errors import UserError
from stjax.train import optim


def _tree(rng, layers=4, d=8):
  """A stjax-model-shaped tree: params["llm"] with GPT-2 names plus an outside head."""

  def dense(i, o):
    return {
      "kernel": rng.standard_normal((i, o)).astype(np.float32),
      "bias": rng.standard_normal(o).astype(np.float32),
    }

  def ln():
    return {
      "scale": rng.standard_normal(d).astype(np.float32),
      "bias": rng.standard_normal(d).astype(np.float32),
    }

  llm = {
    "wte": {"embedding": rng.standard_normal((5, d)).astype(np.float32)},
    "wpe": {"embedding": rng.standard_normal((7, d)).astype(np.float32)},
    "ln_f": ln(),
  }
  for i in range(layers):
    llm[f"h_{i}"] = {
      "ln_1": ln(),
      "ln_2": ln(),
      "attn": {"c_attn": dense(d, 3 * d), "c_proj": dense(d, d)},
      "mlp": {"c_fc": dense(d, 4 * d), "c_proj": dense(4 * d, d)},
    }
  llm["h_3"]["extra_ffn"] = {"w": rng.standard_normal((d, d)).astype(np.float32)}
  return {"llm": llm, "head": dense(d, 3)}


def _flat(mask):
  return {"/".join(str(k.key) for k in p): v for p, v in jax.tree_util.tree_leaves_with_path(mask)}


def test_pfa_mask_follows_st_llm(rng):
  flat = _flat(optim.trainable_mask(_tree(rng), "pfa(2)"))
  for i in range(4):
    for ln in ("ln_1", "ln_2"):
      assert flat[f"llm/h_{i}/{ln}/scale"] and flat[f"llm/h_{i}/{ln}/bias"]
    for proj in ("c_fc", "c_proj"):
      assert not flat[f"llm/h_{i}/mlp/{proj}/kernel"] and not flat[f"llm/h_{i}/mlp/{proj}/bias"]
    for proj in ("c_attn", "c_proj"):
      assert flat[f"llm/h_{i}/attn/{proj}/kernel"] == (i >= 2)
  assert not flat["llm/wte/embedding"]
  assert flat["llm/wpe/embedding"] and flat["llm/ln_f/scale"]
  assert flat["llm/h_3/extra_ffn/w"] and flat["head/kernel"]  # new modules and the head train


def test_named_policies_and_rules(rng):
  tree = _tree(rng)
  assert all(_flat(optim.trainable_mask(tree, "full")).values())
  frozen = _flat(optim.trainable_mask(tree, "frozen"))
  assert not any(v for k, v in frozen.items() if k.startswith("llm/")) and frozen["head/bias"]
  rules = [(r"/ln_\d/", True), (r"^llm/", False)]
  by_rules = _flat(optim.trainable_mask(tree, rules))
  assert (
    by_rules["llm/h_0/ln_1/scale"] and not by_rules["llm/h_0/attn/c_attn/kernel"] and by_rules["head/kernel"]
  )
  cfg = optim.default_optim_config()
  cfg.trainable = "pfa(1)"
  assert _flat(optim.trainable_mask(tree, cfg))["llm/h_3/attn/c_proj/bias"]
  # A bare GPT-2 (no "llm" key) is the LLM itself.
  bare = _flat(optim.trainable_mask(tree["llm"], "pfa(1)"))
  assert bare["h_3/attn/c_attn/kernel"] and not bare["h_2/attn/c_attn/kernel"]
  with pytest.raises(UserError, match="pfa\\(5\\) needs at least 5"):
    optim.trainable_mask(tree, "pfa(5)")
  with pytest.raises(UserError, match="no lora_a/lora_b"):
    optim.trainable_mask(tree, "lora")
  with pytest.raises(UserError, match="unknown policy 'half'"):
    optim.trainable_mask(tree, "half")


@pytest.mark.parametrize("name, state_copies", [("adamw", 2), ("adam", 2), ("ranger", 3)])
def test_frozen_leaves_never_change_and_have_no_state(rng, name, state_copies):
  params = _tree(rng)
  mask = optim.trainable_mask(params, "pfa(1)")
  cfg = optim.default_optim_config()
  cfg.name, cfg.weight_decay, cfg.grad_clip_norm, cfg.learning_rate = name, 0.1, 1.0, 1e-2
  tx, _ = optim.make_optimizer(cfg, params, mask)
  state = tx.init(params)
  total, trainable = optim.count_params(params, mask)
  state_size = sum(x.size for x in jax.tree_util.tree_leaves(state) if np.ndim(x) > 0)
  assert state_size == state_copies * trainable < total  # moments (+ slow weights) of trainable only

  def loss(p):
    return sum(jnp.sum(jnp.sin(x)) for x in jax.tree_util.tree_leaves(p))

  @jax.jit
  def step(p, s):
    updates, s = tx.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, updates), s

  new = params
  for _ in range(7):  # crosses ranger's lookahead sync at step 6
    new, state = step(new, state)
  for (path, flag), old, now in zip(
    jax.tree_util.tree_leaves_with_path(mask),
    jax.tree_util.tree_leaves(params),
    jax.tree_util.tree_leaves(new),
  ):
    if flag:
      assert np.all(np.asarray(now) != old), path
    else:
      np.testing.assert_array_equal(np.asarray(now), old, err_msg=str(path))


def _ranger_reference(params, grads_fn, steps, lr, b1, b2, eps, wd, k, alpha, threshold, llm_key_paths):
  """float64 NumPy Ranger (ST-LLM's ranger21.py form): GC -> RAdam -> decoupled decay -> lookahead."""
  p = {n: v.astype(np.float64) for n, v in params.items()}
  slow = {n: v.copy() for n, v in p.items()}
  mu = {n: np.zeros_like(v) for n, v in p.items()}
  nu = {n: np.zeros_like(v) for n, v in p.items()}
  rho_inf = 2.0 / (1.0 - b2) - 1.0
  for t in range(1, steps + 1):
    g = grads_fn(p)
    for n in p:
      gn = g[n]
      if gn.ndim > 1:
        axes = tuple(range(1, gn.ndim)) if n in llm_key_paths else tuple(range(gn.ndim - 1))
        gn = gn - gn.mean(axis=axes, keepdims=True)
      mu[n] = b1 * mu[n] + (1 - b1) * gn
      nu[n] = b2 * nu[n] + (1 - b2) * gn**2
      mu_hat = mu[n] / (1 - b1**t)
      rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
      if rho > threshold:  # eps on the uncorrected sqrt(v); sqrt(1 - b2^t) in the step size
        r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        u = r * np.sqrt(1 - b2**t) * mu_hat / (np.sqrt(nu[n]) + eps)
      else:
        u = mu_hat
      p[n] = p[n] - lr * (u + wd * p[n])
    if t % k == 0:
      for n in p:
        slow[n] = slow[n] + alpha * (p[n] - slow[n])
        p[n] = slow[n].copy()
  return p


def test_ranger_matches_numpy_reference(rng):
  params = {
    "llm": {"c_attn": {"kernel": rng.standard_normal((4, 6)).astype(np.float32)}},
    "head": {
      "kernel": rng.standard_normal((3, 5)).astype(np.float32),
      "bias": rng.standard_normal(5).astype(np.float32),
    },
  }
  target = jax.tree_util.tree_map(lambda x: rng.standard_normal(x.shape).astype(np.float32), params)
  cfg = optim.default_optim_config()
  cfg.update(name="ranger", learning_rate=1e-2, b1=0.95, b2=0.999, eps=1e-5, weight_decay=1e-2)
  tx, _ = optim.make_optimizer(cfg, params, optim.trainable_mask(params, "full"))

  def loss(p):
    return sum(
      jnp.sum((a - b) ** 3) for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(target))
    )

  state, p = tx.init(params), params
  for _ in range(13):
    updates, state = tx.update(jax.grad(loss)(p), state, p)
    p = optax.apply_updates(p, updates)
  names = ["head/bias", "head/kernel", "llm/c_attn/kernel"]
  flat_t = dict(zip(names, jax.tree_util.tree_leaves(target)))
  ref = _ranger_reference(
    dict(zip(names, jax.tree_util.tree_leaves(params))),
    lambda q: {n: 3 * (q[n] - flat_t[n]) ** 2 for n in q},
    13,
    1e-2,
    0.95,
    0.999,
    1e-5,
    1e-2,
    6,
    0.5,
    5.0,
    {"llm/c_attn/kernel"},
  )
  for n, got in zip(names, jax.tree_util.tree_leaves(p)):
    np.testing.assert_allclose(np.asarray(got), ref[n], atol=2e-5, err_msg=n)


def test_schedules():
  cfg = optim.default_optim_config()
  cfg.update(learning_rate=1.0, schedule="multistep", milestones=(2, 5), decay_factor=0.3)
  s = optim.make_schedule(cfg, steps_per_epoch=10)
  assert [float(s(i)) for i in (0, 19, 20, 49, 50, 99)] == pytest.approx([1, 1, 0.3, 0.3, 0.09, 0.09])
  cfg.update(schedule="warmup_cosine", warmup_steps=10, min_lr_ratio=0.1)
  s = optim.make_schedule(cfg, total_steps=110)
  assert [float(s(i)) for i in (0, 5, 10, 60, 110)] == pytest.approx([0, 0.5, 1.0, 0.55, 0.1])
  cfg.schedule = "linear"
  with pytest.raises(UserError, match="unknown schedule 'linear'"):
    optim.make_schedule(cfg)


def test_full_size_pfa_count_matches_hand_count(capsys):
  assert optim._main(["--policy=pfa(2)", "--llm-layers=6"]) == 0
  out = capsys.readouterr().out
  # Hand count in docs/gpt2.md.
  assert "total parameters:     81,912,576" in out
  assert "trainable parameters: 5,531,136" in out
