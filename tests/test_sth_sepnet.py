"""STH-SepNet: whole-model shapes and training (LoRA trains, GPT-2 stays frozen, hypergraph state),
patching, fusion gates against NumPy, ablations and config errors. Tiny geometry throughout."""

import warnings
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from stjax.errors import UserError
from stjax.models import build_model
from stjax.models.sth_sepnet import default_config
from stjax.models.sth_sepnet.fusion import AdaptiveGate, AttentionGate, LSTMGate
from stjax.models.sth_sepnet.temporal import num_patches, replication_pad_patches
from stjax.train.optim import trainable_mask

N, T_IN, T_OUT, C_IN, C_OUT = 9, 12, 6, 2, 1
STEPS_PER_DAY = 24


def tiny_config(**overrides):
  c = default_config()
  c.update(
    dict(
      pretrained="",
      vocab_size=64,
      n_positions=16,
      n_embd=16,
      n_head=2,
      llm_layers=1,
      num_layers=1,
      d_model=8,
      d_ff=4,
      n_heads=2,
      num_prototypes=10,
      patch_len=4,
      stride=2,
      residual_channels=8,
      conv_channels=8,
      skip_channels=8,
      end_channels=16,
      node_dim=4,
      top_k=3,
      hypergraph_refresh=2,
      graph_block=4,
    )
  )
  c.update(overrides)
  return c


def tiny_spec(adjacency=None):
  return SimpleNamespace(
    num_nodes=N,
    input_len=T_IN,
    output_len=T_OUT,
    in_channels=C_IN,
    out_channels=C_OUT,
    adjacency=adjacency,
    steps_per_day=STEPS_PER_DAY,
  )


def build(**overrides):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # random GPT-2 on purpose
    return build_model(tiny_config(**overrides), tiny_spec(np.eye(N, dtype=np.float32)))


def make_batch(rng, b=2):
  return {
    "x": jnp.asarray(rng.normal(size=(b, T_IN, N, C_IN)), jnp.float32),
    "tod": jnp.zeros((b, T_IN), jnp.float32),
    "dow": jnp.zeros((b, T_IN), jnp.int32),
    "y": jnp.asarray(rng.normal(size=(b, T_OUT, N, C_OUT)), jnp.float32),
  }


@pytest.fixture(scope="module")
def model_and_variables():
  model = build()
  batch = make_batch(np.random.default_rng(0))
  inputs = {k: batch[k] for k in ("x", "tod", "dow")}
  variables = jax.jit(lambda k: model.init({"params": k, "dropout": k}, inputs))(jax.random.key(0))
  return model, variables


def _leaves(tree):
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_training_moves_lora_only_inside_gpt2_and_updates_graph_state(model_and_variables, rng):
  model, variables = model_and_variables
  params, graph = variables["params"], variables["graph"]
  mask = trainable_mask(params, "lora")
  tx = optax.multi_transform({True: optax.adam(1e-2), False: optax.set_to_zero()}, mask)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, graph, opt_state, batch, key):
    def loss_fn(p):
      (pred, aux), state = model.apply(
        {"params": p, "graph": graph}, batch, train=True, rngs={"dropout": key}, mutable=["graph"]
      )
      return jnp.mean((pred - batch["y"]) ** 2) + aux["aux_loss"], (pred, state["graph"])

    (loss, (pred, new_graph)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_graph, opt_state, loss, pred, grads

  before = _leaves(params)
  p, g, o = params, graph, opt_state
  for i in range(3):
    p, g, o, loss, pred, grads = step(p, g, o, make_batch(rng), jax.random.key(i))
    assert pred.shape == (2, T_OUT, N, C_OUT) and np.isfinite(float(loss))
    assert np.all(np.isfinite(np.asarray(pred)))
  after = _leaves(p)
  assert int(g["spatial"]["hypergraph"]["step"]) == 3
  # graph_refresh = 0 follows hypergraph_refresh (2): the top-k edges are state, re-selected at
  # steps 0 and 2, and their weights still train the embeddings every step.
  assert int(g["spatial"]["adaptive_graph"]["step"]) == 3
  assert g["spatial"]["adaptive_graph"]["src"].shape == (N * 3,)

  lora_b = [k for k in before if k.startswith("['llm']") and "lora_b" in k]
  assert len(lora_b) == 4  # 1 block x (c_attn, attn c_proj, c_fc, mlp c_proj): rank-4 LoRA everywhere
  assert all(before[k].shape[0] == 4 for k in lora_b)
  assert all(np.all(before[k] == 0) and np.any(after[k] != 0) for k in lora_b)
  frozen = [k for k in before if k.startswith("['llm']") and "lora_" not in k]
  assert any("wte" in k for k in frozen) and any("c_attn']['kernel" in k for k in frozen)
  for k in frozen:
    np.testing.assert_array_equal(after[k], before[k], err_msg=k)  # bit-identical
  for k in (
    "['temporal']['prototypes']['kernel']",
    "['fusion']['gate']['kernel']",
    "['spatial']['hypergraph']['emb']",
    "['spatial']['adaptive_graph']['emb1']",
    "['spatial']['gamma_0']",
  ):
    assert np.any(after[k] != before[k]), k
  hyper_grad = np.asarray(grads["spatial"]["hypergraph"]["emb"])
  assert np.all(np.isfinite(hyper_grad)) and np.abs(hyper_grad).sum() > 0


def test_eval_is_deterministic_and_reads_the_graph(model_and_variables, rng):
  model, variables = model_and_variables
  batch = make_batch(rng)
  apply = jax.jit(lambda v, b: model.apply(v, b, train=False))
  pred, aux = apply(variables, batch)
  pred2, _ = apply(variables, batch)
  assert pred.shape == (2, T_OUT, N, C_OUT) and np.all(np.isfinite(np.asarray(pred)))
  np.testing.assert_array_equal(np.asarray(pred), np.asarray(pred2))
  assert float(aux["aux_loss"]) == 0.0 and abs(float(aux["gamma"]) - 0.5) < 1e-6
  # Other hyperedges -> another forecast: the stored incidence is what eval uses.
  members = variables["graph"]["spatial"]["hypergraph"]["members"]
  shifted = jax.tree.map(lambda a: a, variables)
  shifted["graph"]["spatial"]["hypergraph"]["members"] = (members + 1) % N
  pred3, _ = apply(shifted, batch)
  assert not np.allclose(np.asarray(pred3), np.asarray(pred))


def test_graph_refresh_one_is_stateless_mtgnn(rng):
  """graph_refresh = 1: the adaptive graph keeps no state (top-k re-selected on every call)."""
  model = build(graph_refresh=1, use_llm=False)
  batch = make_batch(rng)
  inputs = {k: batch[k] for k in ("x", "tod", "dow")}
  variables = jax.jit(lambda k: model.init({"params": k, "dropout": k}, inputs))(jax.random.key(0))
  assert "adaptive_graph" not in variables["graph"]["spatial"]
  assert "hypergraph" in variables["graph"]["spatial"]
  (pred, _), state = jax.jit(
    lambda v, b: model.apply(v, b, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["graph"])
  )(variables, batch)
  assert pred.shape == (2, T_OUT, N, C_OUT) and "adaptive_graph" not in state["graph"]["spatial"]


@pytest.mark.parametrize(
  "overrides, present, absent",
  [
    (dict(use_llm=False), {"spatial"}, {"llm", "temporal", "fusion"}),
    (dict(use_spatial=False), {"llm", "temporal"}, {"spatial", "fusion"}),
    (dict(graph="static"), {"spatial", "llm"}, set()),
    (dict(use_hypergraph=False, fusion="lstm"), {"spatial", "fusion"}, set()),
    (dict(fusion="attention", hypergraph_conv="hgcn"), {"fusion", "spatial"}, set()),
  ],
)
def test_ablation_variants_build_and_shape(overrides, present, absent):
  model = build(**overrides)
  inputs = {
    "x": jnp.zeros((2, T_IN, N, C_IN)),
    "tod": jnp.zeros((2, T_IN)),
    "dow": jnp.zeros((2, T_IN), jnp.int32),
  }
  variables = jax.eval_shape(lambda k: model.init({"params": k, "dropout": k}, inputs), jax.random.key(0))
  keys = set(variables["params"])
  assert present <= keys and not absent & keys
  pred, _ = jax.eval_shape(lambda v: model.apply(v, inputs), variables)
  assert pred.shape == (2, T_OUT, N, C_OUT)
  spatial = variables["params"].get("spatial", {})
  if overrides.get("graph") == "static":
    assert "adaptive_graph" not in spatial and "mixprop_t_0" not in spatial
  if overrides.get("use_hypergraph") is False:
    assert "hypergraph" not in spatial and "gamma_0" not in spatial
    assert set(variables["graph"]["spatial"]) == {"adaptive_graph"}  # top-k edge state only


def test_extra_inputs_feed_the_spatial_stream(rng):
  """calendar_dim, node_input_dim > 0: the spatial stream sees [x ; tod row ; dow row ; node row]
  per step and node (checked against the stream applied to that concatenation built in NumPy), and
  the forecast depends on the day of week; with both 0 there are no such parameters."""
  e, d = 3, 2
  model = build(calendar_dim=e, node_input_dim=d, use_llm=False)
  batch = make_batch(rng)
  batch["tod"] = jnp.asarray(rng.integers(0, STEPS_PER_DAY, (2, T_IN)) / STEPS_PER_DAY, jnp.float32)
  batch["dow"] = jnp.asarray(rng.integers(0, 7, (2, T_IN)), jnp.int32)
  variables = jax.jit(lambda k: model.init({"params": k, "dropout": k}, batch))(jax.random.key(0))
  params = variables["params"]
  assert set(params["calendar"]) == {"time_day", "time_week"} and set(params["node_input"]) == {"node_emb"}
  pred, _ = model.apply(variables, batch)

  tod_rows = np.asarray(params["calendar"]["time_day"])[
    np.rint(np.asarray(batch["tod"]) * STEPS_PER_DAY).astype(int)
  ]
  dow_rows = np.asarray(params["calendar"]["time_week"])[np.asarray(batch["dow"])]
  cal = np.broadcast_to(np.concatenate([tod_rows, dow_rows], -1)[:, :, None], (2, T_IN, N, 2 * e))
  nodes = np.broadcast_to(np.asarray(params["node_input"]["node_emb"]), (2, T_IN, N, d))
  x_in = jnp.asarray(np.concatenate([np.asarray(batch["x"]), cal, nodes], -1))
  expected, _ = model.apply(variables, x_in, method=lambda m, x: m.spatial(x))
  np.testing.assert_allclose(np.asarray(pred), np.asarray(expected), rtol=1e-5, atol=1e-6)

  other_day = dict(batch, dow=(batch["dow"] + 1) % 7)
  assert not np.allclose(np.asarray(model.apply(variables, other_day)[0]), np.asarray(pred))
  plain = build(use_llm=False)
  keys = set(
    jax.eval_shape(lambda k: plain.init({"params": k, "dropout": k}, batch), jax.random.key(0))["params"]
  )
  assert not {"calendar", "node_input"} & keys


def test_replication_pad_patches_match_numpy(rng):
  series = rng.normal(size=(3, 48))
  got = np.asarray(replication_pad_patches(jnp.asarray(series), 16, 8))
  padded = np.concatenate([series, np.repeat(series[:, -1:], 8, 1)], 1)
  want = np.stack([padded[:, s : s + 16] for s in range(0, 56 - 16 + 1, 8)], 1)
  assert got.shape == (3, 6, 16) == (3, num_patches(48, 16, 8), 16)
  np.testing.assert_allclose(got, want)


def test_adaptive_gate_equals_formula(rng):
  y_t, y_s = (jnp.asarray(rng.normal(size=(2, 5, 4, 1)), jnp.float32) for _ in range(2))
  gate = AdaptiveGate()
  v = gate.init(jax.random.key(0), y_t, y_s)
  v = jax.tree.map(lambda a: a + 0.3, v)  # non-zero node bias
  got = np.asarray(gate.apply(v, y_t, y_s))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"])
  yt, ys = np.asarray(y_t, np.float64), np.asarray(y_s, np.float64)
  feat = np.concatenate([yt.transpose(0, 2, 3, 1), ys.transpose(0, 2, 3, 1)], -1)  # [B, N, C, 2T]
  g = 1 / (1 + np.exp(-(feat @ p["gate"]["kernel"] + p["gate"]["bias"] + p["node_bias"])))
  g = g.transpose(0, 3, 1, 2)
  np.testing.assert_allclose(got, g * yt + (1 - g) * ys, rtol=1e-5, atol=1e-6)


def test_attention_gate_equals_formula(rng):
  y_t, y_s = (jnp.asarray(rng.normal(size=(2, 5, 3, 2)), jnp.float32) for _ in range(2))
  gate = AttentionGate(hidden=4)
  v = gate.init(jax.random.key(1), y_t, y_s)
  got = np.asarray(gate.apply(v, y_t, y_s))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"])
  lin = lambda name, a: a @ p[name]["kernel"] + p[name]["bias"]
  tt = np.asarray(y_t, np.float64).transpose(0, 2, 1, 3)
  ts = np.asarray(y_s, np.float64).transpose(0, 2, 1, 3)
  s = np.einsum("bnth,bnsh->bnts", lin("query", tt), lin("key", ts)) / 2.0
  a = np.exp(s - s.max(-1, keepdims=True))
  a /= a.sum(-1, keepdims=True)
  out = lin("out", np.einsum("bnts,bnsh->bnth", a, lin("value", ts))).transpose(0, 2, 1, 3)
  np.testing.assert_allclose(got, np.asarray(y_t) + out, rtol=1e-4, atol=1e-5)


def test_lstm_gate_is_per_node(rng):
  y_t, y_s = (jnp.asarray(rng.normal(size=(2, 5, 4, 1)), jnp.float32) for _ in range(2))
  gate = LSTMGate(hidden=3)
  v = gate.init(jax.random.key(2), y_t, y_s)
  out = np.asarray(gate.apply(v, y_t, y_s))
  assert out.shape == y_t.shape and np.all(np.isfinite(out))
  # Changing node 0's inputs changes only node 0's output.
  out2 = np.asarray(gate.apply(v, y_t.at[:, :, 0].add(1.0), y_s))
  assert np.any(out2[:, :, 0] != out[:, :, 0])
  np.testing.assert_array_equal(out2[:, :, 1:], out[:, :, 1:])


@pytest.mark.parametrize(
  "overrides, spec_adj, match",
  [
    (dict(graph="static"), None, "graph_path"),
    (dict(fusion="sum"), np.eye(N), "fusion"),
    (dict(use_llm=False, use_spatial=False), np.eye(N), "use_llm"),
    (dict(d_ff=32), np.eye(N), "d_ff"),
    (dict(conv_channels=6), np.eye(N), "conv_channels"),
    (dict(hyperedge_size=N + 1), np.eye(N), "hyperedge_size"),
    (dict(graph_refresh=-1), np.eye(N), "graph_refresh"),
    (dict(calendar_dim=-2), np.eye(N), "calendar_dim"),
    (dict(calendar_dim=2, use_spatial=False), np.eye(N), "calendar_dim"),
    (dict(node_input_dim=-1), np.eye(N), "node_input_dim"),
    (dict(bogus=1), np.eye(N), "bogus"),
  ],
)
def test_bad_config_is_one_user_error(overrides, spec_adj, match):
  c = tiny_config()
  with c.unlocked():
    c.update(overrides)
  with warnings.catch_warnings(), pytest.raises(UserError, match=match):
    warnings.simplefilter("ignore", UserWarning)
    build_model(c, tiny_spec(spec_adj))
