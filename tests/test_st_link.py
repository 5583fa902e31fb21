"""ST-LINK end to end: shapes of every protocol, finite on zeros, overfits, one trace, PFA, pretrained."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import mae_train_step

from stjax.convert.pretrained import merge_pretrained
from stjax.data.windows import DataSpec
from stjax.errors import UserError
from stjax.models import build_model
from stjax.models.st_link import default_config
from stjax.train import optim

PROTOCOL_SHAPES = {  # name: (input offsets, output len, in channels, out channels, patch_len)
  "dcrnn": (tuple(range(-11, 1)), 12, 1, 1, 3),
  "stllm": (tuple(range(-11, 1)), 12, 1, 1, 4),
  "stssl": (
    tuple(range(-73, -68)) + tuple(range(-49, -44)) + tuple(range(-25, -20)) + tuple(range(-3, 1)),
    1,
    2,
    2,
    1,
  ),
  "sthsepnet": (tuple(range(-47, 1)), 48, 1, 1, 12),
}


def tiny_config(**changes):
  c = default_config()
  c.update(
    n_embd=16,
    n_head=2,
    llm_layers=2,
    unfrozen_layers=1,
    trainable="pfa(1)",
    vocab_size=8,
    n_positions=16,
    temporal_dims=4,
    embed_dim=4,
    memory_size=8,
    memory_key_dim=4,
    memory_top_k=2,
    expert_hidden=8,
  )
  c.update(changes)
  return c


def make_spec(offsets, out_len, c_in, c_out, n=3, adjacency=None):
  return DataSpec(
    num_nodes=n,
    input_len=len(offsets),
    output_len=out_len,
    in_channels=c_in,
    out_channels=c_out,
    input_offsets=offsets,
    output_offsets=tuple(range(1, out_len + 1)),
    steps_per_day=48,
    adjacency=adjacency,
    channel_names=tuple(f"c{i}" for i in range(c_out)),
  )


def make_batch(rng, spec, b=2):
  return {
    "x": jnp.asarray(rng.normal(size=(b, spec.input_len, spec.num_nodes, spec.in_channels)), jnp.float32),
    "tod": jnp.asarray(rng.uniform(size=(b, spec.input_len)), jnp.float32),
    "dow": jnp.asarray(rng.integers(0, 7, (b, spec.input_len)), jnp.int32),
  }


def build(config, spec):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    return build_model(config, spec)


def init(model, batch):
  return jax.jit(lambda b: nn.meta.unbox(model.init({"params": jax.random.key(0)}, b)))(batch)


CASES = [  # every protocol's shapes, each with ablation switches, so every code path is traced
  ("dcrnn", dict()),
  ("dcrnn", dict(se_mode="dual", mrffn=False)),
  ("stllm", dict(se_attention=False, causal=True)),
  ("stssl", dict(mrffn_layers=(0, 1), memory_reseed_after=2, revin=False)),
  ("sthsepnet", dict(node_emb_init="laplacian")),
]


@pytest.mark.parametrize("protocol,changes", CASES)
def test_output_shapes_for_every_protocol(rng, protocol, changes):
  """Shapes by abstract evaluation (the real code is traced, nothing compiled: fast)."""
  offsets, out_len, c_in, c_out, patch_len = PROTOCOL_SHAPES[protocol]
  n = 6
  spec = make_spec(offsets, out_len, c_in, c_out, n=n, adjacency=rng.uniform(size=(n, n)))
  model = build(tiny_config(patch_len=patch_len, **changes), spec)
  batch = make_batch(rng, spec)
  variables = jax.eval_shape(lambda b: nn.meta.unbox(model.init({"params": jax.random.key(0)}, b)), batch)
  assert ("memory" in variables) == changes.get("mrffn", True)
  pred, aux = jax.eval_shape(lambda v, b: model.apply(v, b), variables, batch)
  (pred_t, aux_t), state = jax.eval_shape(
    lambda v, b: model.apply(v, b, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["memory"]),
    variables,
    batch,
  )
  assert pred.shape == pred_t.shape == (2, out_len, n, c_out)
  assert set(aux) == set(aux_t) and "aux_loss" in aux
  assert jax.tree.map(lambda a: a.shape, state) == jax.tree.map(
    lambda a: a.shape, variables.get("memory") and {"memory": variables["memory"]} or {}
  )


def test_bad_patch_len_and_policy_are_user_errors():
  spec = make_spec(PROTOCOL_SHAPES["stssl"][0], 1, 2, 2)
  with pytest.raises(UserError, match="model.patch_len"):
    build(tiny_config(patch_len=3), spec)
  with pytest.raises(UserError, match="model.trainable"):
    build(tiny_config(patch_len=1, trainable="pfa(2)"), spec)
  with pytest.raises(UserError, match="node_emb_init"):
    build(tiny_config(patch_len=1, node_emb_init="laplacian"), spec)


def test_random_init_warns():
  spec = make_spec(tuple(range(-11, 1)), 12, 1, 1)
  with pytest.warns(UserWarning, match="RANDOM weights"):
    build_model(tiny_config(), spec)


@pytest.fixture(scope="module")
def trained():
  """A tiny ST-LINK (MRFFN in the last block) trained under pfa(1): one compiled step for all checks."""
  rng = np.random.default_rng(7)
  spec = make_spec(tuple(range(-11, 1)), 12, 1, 1)
  model = build(tiny_config(dropout=0.0), spec)
  batch = make_batch(rng, spec, b=4)
  y = jnp.asarray(rng.normal(size=(4, 12, 3, 1)) * 2 + 1, jnp.float32)
  variables = init(model, batch)
  params = variables["params"]
  mask = optim.trainable_mask(params, "pfa(1)")
  cfg = optim.default_optim_config()
  cfg.name, cfg.learning_rate = "adam", 1e-2
  tx, _ = optim.make_optimizer(cfg, params, mask)

  step = mae_train_step(model, tx, y)

  # Zero and missing inputs first: one step each must stay finite.
  finite = []
  for x in (jnp.zeros_like(batch["x"]), batch["x"].at[:, :5, 1].set(0.0)):
    p, _, m, mae = step(params, tx.init(params), variables["memory"], {**batch, "x": x}, jax.random.key(0))
    finite.append(
      bool(np.isfinite(float(mae))) and all(np.all(np.isfinite(a)) for a in jax.tree.leaves((p, m)))
    )
  opt_state, memory, losses, p = tx.init(params), variables["memory"], [], params
  for i in range(150):
    p, opt_state, memory, mae = step(p, opt_state, memory, batch, jax.random.key(i))
    losses.append(float(mae))
  return dict(
    model=model,
    variables=variables,
    batch=batch,
    mask=mask,
    params=p,
    memory=memory,
    losses=losses,
    finite=finite,
    traces=step._cache_size(),
  )


def test_training_is_finite_on_zero_and_missing_inputs(trained):
  assert trained["finite"] == [True, True]
  assert trained["traces"] == 1


def test_tiny_model_overfits_one_batch(trained):
  losses = trained["losses"]
  print(f"overfit (pfa(1), 150 Adam steps): MAE {losses[0]:.3f} -> {losses[-1]:.4f}")
  assert losses[-1] < 0.1 * losses[0]


def test_memory_state_is_threaded_through_training(trained):
  before = trained["variables"]["memory"]["llm"]["h_1"]["extra_ffn"]["memory"]
  after = trained["memory"]["llm"]["h_1"]["extra_ffn"]["memory"]
  assert not np.allclose(before["keys"], after["keys"])
  np.testing.assert_allclose(np.linalg.norm(after["keys"], axis=-1), 1.0, rtol=1e-5)
  assert float(after["usage"].sum()) > 0.9


def test_pfa_leaves_frozen_gpt2_unchanged(trained):
  variables, params, mask = trained["variables"], trained["params"], trained["mask"]
  total, trainable = optim.count_params(variables["params"], mask)
  print(f"ST-LINK tiny: {total:,} params, {trainable:,} trainable under pfa(1)")
  flat_mask = dict(jax.tree_util.tree_leaves_with_path(mask))
  changed = jax.tree.map(
    lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), variables["params"], params
  )
  for path, moved in jax.tree_util.tree_leaves_with_path(changed):
    name = jax.tree_util.keystr(path)
    if name == "['llm']['wpe']['embedding']":  # trainable under PFA but unused with SE rotations: no gradient
      continue
    assert moved == flat_mask[path], f"{name}: trainable={flat_mask[path]} but moved={moved}"
  frozen = {jax.tree_util.keystr(p) for p, t in flat_mask.items() if not t}
  assert "['llm']['h_0']['attn']['c_attn']['kernel']" in frozen  # lower block attention frozen
  assert "['llm']['h_1']['mlp']['c_fc']['kernel']" in frozen  # pretrained MLP frozen everywhere
  assert "['llm']['h_1']['attn']['c_attn']['kernel']" not in frozen  # upper attention trains
  assert "['llm']['h_1']['extra_ffn']['memory']['values']" not in frozen  # MRFFN trains


def test_jitted_forward_compiles_once_per_shape(rng, trained):
  model, variables = trained["model"], trained["variables"]
  spec = make_spec(tuple(range(-11, 1)), 12, 1, 1)
  traces = []

  @jax.jit
  def forward(variables, batch):
    traces.append(1)
    return model.apply(variables, batch)

  for _ in range(3):
    forward(variables, make_batch(rng, spec, b=4))
  assert len(traces) == 1
  jax.eval_shape(forward, variables, make_batch(rng, spec, b=3))
  assert len(traces) == 2


def test_pretrained_weights_load_into_llm(rng, tmp_path):
  from stjax.convert import hf_gpt2
  from stjax.models.backbones.gpt2 import GPT2, GPT2Config

  spec = make_spec(tuple(range(-11, 1)), 12, 1, 1)
  gcfg = GPT2Config(n_embd=16, n_head=2, n_layer=3, vocab_size=8, n_positions=16)
  gpt = jax.jit(lambda x: nn.meta.unbox(GPT2(gcfg).init(jax.random.key(5), x)))(jnp.zeros((1, 4, 16)))[
    "params"
  ]
  folder = hf_gpt2.export(gcfg, gpt, tmp_path / "hf")
  config = tiny_config(pretrained=str(folder))
  model = build_model(config, spec)  # no random-init warning: pretrained is set
  shapes = jax.eval_shape(
    lambda b: nn.meta.unbox(model.init({"params": jax.random.key(0)}, b)), make_batch(rng, spec)
  )
  variables = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), shapes)  # merging needs shapes only
  merged = merge_pretrained(config, variables["params"])
  np.testing.assert_array_equal(
    merged["llm"]["h_1"]["attn"]["c_attn"]["kernel"], gpt["h_1"]["attn"]["c_attn"]["kernel"]
  )
  np.testing.assert_array_equal(merged["llm"]["wpe"]["embedding"], gpt["wpe"]["embedding"])
  assert "h_2" not in merged["llm"]  # truncated to llm_layers
  assert "extra_ffn" in merged["llm"]["h_1"]  # new modules keep their init
  with pytest.raises(UserError, match="model.n_head"):
    merge_pretrained(tiny_config(pretrained=str(folder), n_head=4, temporal_dims=2), variables["params"])
