"""The jitted train step on 8 simulated CPU devices equals the 1-device step, for every mesh
layout of docs/scaling.md (LAYOUTS below), and the rules/assertions of stjax.sharding.

A tiny model with logically partitioned params (`mlp`, `embed` axes), dropout, an aux loss and a
`memory` state collection, and the real tiny ST-LINK (GPT-2 blocks with SE-Attention, MRFFN
memory, RevIN), run two steps on one device and on each layout with the same input; loss,
updated params, optimizer state and memory agree.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from helpers import TINY_ST_LINK, load_config

from stjax import sharding
from stjax.data.windows import Scaler
from stjax.train.state import TrainState, split_variables
from stjax.train.step import jit_train_step, make_loss_fn, make_train_step

B, T, N, C, T_OUT, D = 16, 6, 8, 1, 3, 16

# The layouts docs/scaling.md documents, on 8 devices (axis sizes; the rest are 1).
LAYOUTS = [
  {"data": 8},  # pure data parallel
  {"fsdp": 8},  # ZeRO-3: params and optimizer state split 8 ways
  {"data": 4, "tensor": 2},  # data parallel x tensor parallel
  {"data": 2, "fsdp": 2, "tensor": 2},  # all three parameter/batch axes
  {"data": 2, "nodes": 4},  # graph/token parallel: the node axis split 4 ways
  {"fsdp": 2, "nodes": 2, "tensor": 2},  # every axis that splits something
]


class TinyForecaster(nn.Module):
  """Per-node MLP over the input window; implements the stjax model interface."""

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x = batch["x"]  # [B, T, N, C]
    b = x.shape[0]
    h = x.transpose(0, 2, 1, 3).reshape(b, N, T * C)  # [B, N, T*C]
    h = jnp.concatenate([h, jnp.broadcast_to(batch["tod"][:, None, -1:], (b, N, 1)).astype(h.dtype)], -1)
    w1 = self.param(
      "w1", nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, "mlp")), (T * C + 1, D)
    )
    w2 = self.param(
      "w2", nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("mlp", "embed")), (D, 8)
    )
    w3 = self.param(
      "w3", nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", None)), (8, T_OUT * C)
    )
    h = jax.nn.gelu(h @ w1.astype(h.dtype))
    h = nn.with_logical_constraint(h, ("batch", "nodes", "mlp"))
    h = nn.Dropout(0.2, deterministic=not train)(h)
    z = h @ w2.astype(h.dtype)  # [B, N, 8]
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
  mesh_cfg.update({"data": 1, **mesh_sizes})
  devices = jax.devices()[: int(np.prod([v for v in mesh_sizes.values() if v > 0]))]
  mesh, rules = sharding.make_mesh(mesh_cfg, devices), sharding.logical_rules(mesh_cfg)
  return mesh, rules


def _run_step(
  mesh, rules, batch_np, variables_np, tx, scaler, trainable, model=None, min_shard_size=0, protocol=None
):
  model = model or TinyForecaster()
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(
      lambda: model.init(
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
        {k: batch_np[k] for k in ("x", "tod", "dow")},
      )
    )
    var_sh = sharding.tree_shardings(boxed, mesh, rules, min_shard_size)
    params_sh, ms_sh = split_variables(dict(var_sh))
    params_abs, _ = split_variables(dict(sharding.unbox_abstract(boxed)))
    opt_sh = sharding.opt_state_shardings(jax.eval_shape(tx.init, params_abs), params_abs, params_sh, mesh)
    rep = sharding.replicated(mesh)
    shardings = TrainState(step=rep, params=params_sh, opt_state=opt_sh, model_state=ms_sh, rng=rep)
    params, model_state = split_variables(variables_np)
    params = jax.device_put(params, params_sh)
    state = TrainState(
      step=jax.device_put(jnp.int32(3), rep),
      params=params,
      opt_state=jax.jit(tx.init, out_shardings=opt_sh)(params),
      model_state=jax.device_put(model_state, ms_sh),
      rng=jax.device_put(jax.random.PRNGKey(7), rep),
    )
    step = make_train_step(
      model,
      tx,
      make_loss_fn(protocol or _Protocol, scaler),
      trainable,
      schedule=lambda s: 1e-2 * jnp.ones(()),
    )
    step = jit_train_step(step, shardings, mesh)
    batch = sharding.put_batch(
      {k: batch_np[k] for k in ("x", "tod", "dow", "y")},
      sharding.batch_shardings(mesh, ("x", "tod", "dow", "y")),
    )
    new_state, m = step(state, batch)
    new_state, m2 = step(new_state, batch)  # two steps: the second sees updated memory and moments
  if "w1" in new_state.params and mesh.size > 1:
    w1 = new_state.params["w1"]
    assert w1.sharding.spec == jax.sharding.PartitionSpec(None, rules_target(rules, "mlp"))
  assert batch["x"].sharding.spec == jax.sharding.PartitionSpec(sharding.BATCH_AXES, None, "nodes")
  return jax.device_get((new_state, m, m2)), new_state.params


def rules_target(rules, name):
  return dict(rules)[name]


def _assert_same(single, multi, rtol=1e-5, atol=1e-6):
  s_state, s_m, s_m2 = single
  m_state, m_m, m_m2 = multi
  for a, b in ((s_m, m_m), (s_m2, m_m2)):
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol),
    (s_state.params, s_state.opt_state, s_state.model_state),
    (m_state.params, m_state.opt_state, m_state.model_state),
  )


@pytest.mark.parametrize("mesh_sizes", LAYOUTS)
def test_sharded_step_matches_single_device(mesh_sizes, rng):
  assert len(jax.devices()) >= 8
  batch = {
    "x": rng.normal(size=(B, T, N, C)).astype(np.float32),
    "tod": rng.uniform(size=(B, T)).astype(np.float32),
    "dow": rng.integers(0, 7, size=(B, T)).astype(np.int32),
    "y": (rng.uniform(size=(B, T_OUT, N, C)) * 50).astype(np.float32),
  }
  batch["y"][0, 0, 0, 0] = 0.0  # a missing reading the masked loss must skip
  scaler = Scaler(np.full((1, C), 25.0, np.float32), np.full((1, C), 10.0, np.float32))
  variables = jax.device_get(
    nn.meta.unbox(
      TinyForecaster().init({"params": jax.random.PRNGKey(1)}, {k: batch[k] for k in ("x", "tod", "dow")})
    )
  )
  trainable = {"w1": True, "w2": True, "w3": False}
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.masked(optax.adamw(1e-2), trainable))

  single, _ = _run_step(*_setup({"data": 1}), batch, variables, tx, scaler, trainable)
  multi, _ = _run_step(*_setup(mesh_sizes), batch, variables, tx, scaler, trainable)
  _assert_same(single, multi)
  s_state, s_m, _ = single
  assert int(multi[0].step) == 5
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
  got = make_loss_fn(_Protocol, scaler)(jnp.asarray(pred), jnp.asarray(y))
  p64 = pred.astype(np.float64) * 7.0 + 30.0
  mask = y != 0
  np.testing.assert_allclose(got, np.abs(p64 - y)[mask].mean(), rtol=1e-5)

  class Mse:
    loss, null_rule, name = "mse", "none", "mse"

  got = make_loss_fn(Mse, scaler)(jnp.asarray(pred), jnp.asarray(y))
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


def _synthetic_bundle(protocol="dcrnn"):
  from stjax.data.windows import build_data, default_data_config

  cfg = default_data_config()
  cfg.protocol = protocol
  cfg.synthetic.update(num_nodes=N, num_steps=400)
  return build_data(cfg)


def _tiny_st_link_config():
  m = load_config(TINY_ST_LINK).model  # the tiny ST-LINK of tests/fixtures, with 2 blocks
  m.llm_layers = 2
  return m


@pytest.mark.parametrize(
  "mesh_sizes", [{"data": 2, "fsdp": 2, "tensor": 2}, {"fsdp": 2, "nodes": 2, "tensor": 2}]
)
@pytest.mark.filterwarnings("ignore:config.model.pretrained is empty")
def test_real_st_link_step_matches_single_device(mesh_sizes):
  """Tiny ST-LINK (GPT-2 blocks with SE-Attention, MRFFN memory, RevIN, PFA mask): two sharded
  steps equal the 1-device steps; every leaf with >= 64 elements is split (annotated ones by the
  rules, the rest by size), so the FSDP/tensor/nodes paths really run."""
  from stjax.models import build_model
  from stjax.train import optim

  bundle = _synthetic_bundle()
  model = build_model(_tiny_st_link_config(), bundle.spec)
  batch = bundle.splits["train"].batch(list(range(8)))
  variables = jax.device_get(
    nn.meta.unbox(
      model.init(
        {"params": jax.random.PRNGKey(3), "dropout": jax.random.PRNGKey(4)},
        {k: batch[k] for k in ("x", "tod", "dow")},
      )
    )
  )
  trainable = optim.trainable_mask(variables["params"], "pfa(1)")
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.masked(optax.adamw(1e-2), trainable))
  args = (batch, variables, tx, bundle.target_scaler, trainable, model, 64, bundle.protocol)
  single, _ = _run_step(*_setup({"data": 1}), *args)
  multi, params = _run_step(*_setup(mesh_sizes), *args)
  # Adam divides by sqrt(v): near-zero gradients turn float32 reduction-order noise into ~1e-6
  # parameter differences after two lr=1e-2 steps; losses and memory agree far tighter.
  _assert_same(single, multi, rtol=1e-4, atol=1e-5)
  sharding.assert_sharded(params, jax.tree.map(lambda a: a.sharding, params), 64)
  # The MRFFN memory keys moved (state threaded through the sharded step).
  moved = jax.tree.map(
    lambda a, b: not np.allclose(a, b), single[0].model_state["memory"], variables["memory"]
  )
  assert any(jax.tree.leaves(moved))


def _names(boxed) -> set[str]:
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  return {n for x in leaves if isinstance(x, nn.Partitioned) for n in x.names if isinstance(n, str)}


@pytest.mark.filterwarnings("ignore:config.model.pretrained is empty")
def test_rules_cover_every_model_and_shard_the_llama_backbone():
  """Every logical name of ST-LINK, ST-LLM (GPT-2 small) and STH-SepNet (Llama 3.2 1B geometry)
  has a default rule; on fsdp=2 x tensor=4 every param >= 1M elements is split (shapes only)."""
  from stjax.models import build_model, st_link, st_llm, sth_sepnet

  bundle = _synthetic_bundle()
  example = {k: v for k, v in bundle.splits["train"].batch([0]).items() if k in ("x", "tod", "dow")}
  sep = sth_sepnet.default_config()
  sep.update(backbone="llama", llm_layers=2, pretrained="")
  mesh, rules = _setup({"fsdp": 2, "tensor": 4})
  known = {name for name, _ in sharding.DEFAULT_RULES}
  for mc in (st_link.default_config(), st_llm.default_config(), sep):
    model = build_model(mc, bundle.spec)
    boxed = jax.eval_shape(lambda m=model: m.init({"params": jax.random.PRNGKey(0)}, example))["params"]
    assert _names(boxed) <= known, mc.name
    shardings = sharding.tree_shardings(boxed, mesh, rules, 1 << 20)
    sharding.assert_sharded(sharding.unbox_abstract(boxed), shardings, 1 << 20)
  P = jax.sharding.PartitionSpec
  llm = shardings["llm"]
  assert llm["embed_tokens"]["embedding"].spec == P("tensor", "fsdp")
  assert llm["layers_0"]["self_attn"]["k_proj"]["kernel"].spec == P("fsdp", "tensor")
  assert llm["layers_1"]["mlp"]["down_proj"]["kernel"].spec == P("tensor", "fsdp")
  # STH-SepNet's unannotated prototype map [128256, 1000] is split by size on its vocab axis.
  assert shardings["temporal"]["prototypes"]["kernel"].spec == P(("fsdp", "tensor"), None)
  # Rules that replicate everything fail loudly instead of silently copying 1B params 8 times.
  flat = tuple((name, None) for name, _ in sharding.DEFAULT_RULES if name != "batch") + (
    ("batch", ("data", "fsdp")),
  )
  with pytest.raises(sharding.UserError, match="would be replicated"):
    sharding.assert_sharded(
      sharding.unbox_abstract(boxed), sharding.tree_shardings(boxed, mesh, flat), 1 << 20
    )
  with pytest.raises(sharding.UserError, match="no rule for logical axis 'kv_heads'"):
    sharding.tree_shardings(boxed, mesh, tuple(r for r in rules if r[0] != "kv_heads"))
