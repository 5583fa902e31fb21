"""The jitted train step on 8 simulated CPU devices equals the 1-device step.

A tiny model with logically partitioned params (`mlp`, `embed` axes), dropout, an aux loss and a
`memory` state collection runs one step on one device and on (data=4, tensor=2), (data=8) and
(fsdp=8) meshes with the same input; loss, updated params, optimizer state and memory agree.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from stjax import sharding, trainer
from stjax.data.windows import Scaler
from stjax.train_state import TrainState, split_variables

B, T, N, C, T_OUT, D = 16, 6, 5, 1, 3, 16


class TinyForecaster(nn.Module):
  """Per-node MLP over the input window; implements the stjax model interface."""

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x = batch["x"]                                              # [B, T, N, C]
    b = x.shape[0]
    h = x.transpose(0, 2, 1, 3).reshape(b, N, T * C)            # [B, N, T*C]
    h = jnp.concatenate([h, jnp.broadcast_to(batch["tod"][:, None, -1:], (b, N, 1)).astype(h.dtype)], -1)
    w1 = self.param("w1", nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, "mlp")),
                    (T * C + 1, D))
    w2 = self.param("w2", nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("mlp", "embed")),
                    (D, 8))
    w3 = self.param("w3", nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", None)),
                    (8, T_OUT * C))
    h = jax.nn.gelu(h @ w1.astype(h.dtype))
    h = nn.with_logical_constraint(h, ("batch", "nodes", "mlp"))
    h = nn.Dropout(0.2, deterministic=not train)(h)
    z = h @ w2.astype(h.dtype)                                  # [B, N, 8]
    keys = self.variable("memory", "keys", jnp.zeros, (8,), jnp.float32)
    if train:
      keys.value = 0.9 * keys.value + 0.1 * jax.lax.stop_gradient(z.mean((0, 1))).astype(jnp.float32)
    z = z + keys.value.astype(z.dtype)
    out = (z @ w3.astype(z.dtype)).reshape(b, N, T_OUT, C).transpose(0, 2, 1, 3)
    return out, {"aux_loss": 1e-3 * jnp.mean(z.astype(jnp.float32) ** 2)}


class _Protocol:
  loss, null_rule, name = "masked_mae", "zero", "test"


def _setup(mesh_sizes):
  mesh_cfg = sharding.default_mesh_config()
  mesh_cfg.update(mesh_sizes)
  devices = jax.devices()[:int(np.prod([v for v in mesh_sizes.values() if v > 0]))]
  mesh, rules = sharding.make_mesh(mesh_cfg, devices), sharding.logical_rules(mesh_cfg)
  return mesh, rules


def _run_step(mesh, rules, batch_np, variables_np, tx, scaler, trainable):
  model = TinyForecaster()
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)},
                                              {k: batch_np[k] for k in ("x", "tod", "dow")}))
    var_sh = sharding.tree_shardings(boxed, mesh, rules)
    params_sh, ms_sh = split_variables(dict(var_sh))
    params_abs, _ = split_variables(dict(sharding.unbox_abstract(boxed)))
    opt_sh = sharding.opt_state_shardings(jax.eval_shape(tx.init, params_abs), params_abs, params_sh, mesh)
    rep = sharding.replicated(mesh)
    shardings = TrainState(step=rep, params=params_sh, opt_state=opt_sh, model_state=ms_sh, rng=rep)
    params, model_state = split_variables(variables_np)
    params = jax.device_put(params, params_sh)
    state = TrainState(step=jax.device_put(jnp.int32(3), rep), params=params,
                       opt_state=jax.jit(tx.init, out_shardings=opt_sh)(params),
                       model_state=jax.device_put(model_state, ms_sh),
                       rng=jax.device_put(jax.random.PRNGKey(7), rep))
    step = trainer.make_train_step(model, tx, trainer.make_loss_fn(_Protocol, scaler), trainable,
                                   schedule=lambda s: 1e-2 * jnp.ones(()))
    step = trainer.jit_train_step(step, shardings, mesh)
    batch = sharding.put_batch({k: batch_np[k] for k in ("x", "tod", "dow", "y")},
                               sharding.batch_sharding(mesh))
    new_state, m = step(state, batch)
    new_state, m2 = step(new_state, batch)  # two steps: the second sees updated memory and moments
  if mesh.size > 1:
    w1 = new_state.params["w1"]
    assert w1.sharding.spec == jax.sharding.PartitionSpec(None, rules_target(rules, "mlp"))
  return jax.device_get((new_state, m, m2))


def rules_target(rules, name):
  return dict(rules)[name]


@pytest.mark.parametrize("mesh_sizes", [
    {"data": 4, "fsdp": 1, "tensor": 2},
    {"data": 8, "fsdp": 1, "tensor": 1},
    {"data": 1, "fsdp": 8, "tensor": 1},
    {"data": 2, "fsdp": 2, "tensor": 2},
])
def test_sharded_step_matches_single_device(mesh_sizes, rng):
  assert len(jax.devices()) >= 8
  batch = {"x": rng.normal(size=(B, T, N, C)).astype(np.float32),
           "tod": rng.uniform(size=(B, T)).astype(np.float32),
           "dow": rng.integers(0, 7, size=(B, T)).astype(np.int32),
           "y": (rng.uniform(size=(B, T_OUT, N, C)) * 50).astype(np.float32)}
  batch["y"][0, 0, 0, 0] = 0.0  # a missing reading the masked loss must skip
  scaler = Scaler(np.full((1, C), 25.0, np.float32), np.full((1, C), 10.0, np.float32))
  variables = jax.device_get(nn.meta.unbox(TinyForecaster().init(
      {"params": jax.random.PRNGKey(1)}, {k: batch[k] for k in ("x", "tod", "dow")})))
  trainable = {"w1": True, "w2": True, "w3": False}
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.masked(optax.adamw(1e-2), trainable))

  single = _run_step(*_setup({"data": 1, "fsdp": 1, "tensor": 1}), batch, variables, tx, scaler, trainable)
  multi = _run_step(*_setup(mesh_sizes), batch, variables, tx, scaler, trainable)
  s_state, s_m, s_m2 = single
  m_state, m_m, m_m2 = multi
  for a, b in ((s_m, m_m), (s_m2, m_m2)):
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               (s_state.params, s_state.opt_state, s_state.model_state),
               (m_state.params, m_state.opt_state, m_state.model_state))
  assert int(m_state.step) == 5
  # The step really trained: trainable params moved, the frozen one did not, memory updated.
  assert not np.allclose(s_state.params["w1"], variables["params"]["w1"])
  np.testing.assert_array_equal(s_state.params["w3"], variables["params"]["w3"])
  assert np.abs(s_state.model_state["memory"]["keys"]).sum() > 0
  assert s_m["grad_norm"] > 0 and s_m["aux_loss"] > 0
  np.testing.assert_allclose(s_m["loss"], s_m["data_loss"] + s_m["aux_loss"], rtol=1e-6)


def test_loss_is_masked_mae_in_original_units(rng):
  """make_loss_fn: scaled predictions -> original units, zeros (missing) excluded; float64 reference."""
  pred = rng.normal(size=(4, 3, 5, 1)).astype(np.float32)
  y = (rng.uniform(size=(4, 3, 5, 1)) * 60).astype(np.float32)
  y[rng.uniform(size=y.shape) < 0.3] = 0
  scaler = Scaler(np.full((1, 1), 30.0, np.float32), np.full((1, 1), 7.0, np.float32))
  got = trainer.make_loss_fn(_Protocol, scaler)(jnp.asarray(pred), jnp.asarray(y))
  p64 = pred.astype(np.float64) * 7.0 + 30.0
  mask = y != 0
  np.testing.assert_allclose(got, np.abs(p64 - y)[mask].mean(), rtol=1e-5)

  class Mse:
    loss, null_rule, name = "mse", "none", "mse"

  got = trainer.make_loss_fn(Mse, scaler)(jnp.asarray(pred), jnp.asarray(y))
  np.testing.assert_allclose(got, np.mean((pred.astype(np.float64) - (y - 30.0) / 7.0) ** 2), rtol=1e-5)


def test_mesh_shape_fill_and_errors():
  cfg = ml_collections.ConfigDict({"data": -1, "fsdp": 2, "nodes": 1, "tensor": 1, "rules": ()})
  assert sharding.mesh_shape(cfg, 8) == (4, 2, 1, 1)
  cfg.tensor = 3
  with pytest.raises(sharding.UserError, match="not divisible"):
    sharding.mesh_shape(cfg, 8)
  cfg.update({"data": 2, "fsdp": 2, "tensor": 1})
  with pytest.raises(sharding.UserError, match="needs 4 devices"):
    sharding.mesh_shape(cfg, 8)
  cfg.update({"data": -1, "fsdp": -1})
  with pytest.raises(sharding.UserError, match="at most one"):
    sharding.mesh_shape(cfg, 8)
  bad = sharding.default_mesh_config()
  bad.rules = (("embed", "model"),)
  with pytest.raises(sharding.UserError, match="unknown mesh axis 'model'"):
    sharding.logical_rules(bad)
