"""ST-LINK on the Llama backbone: pretrained loading, SE rotations on Llama's GQA attention (vs
Llama's own RoPE and a float64 NumPy reference), PFA training with MRFFN, bad input."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from helpers import assert_one_line, mae_train_step  # noqa: E402
from test_st_link import make_batch, make_spec, tiny_config  # noqa: E402

from stjax.convert import hf_llama  # noqa: E402
from stjax.convert.pretrained import backbone_config_of, merge_pretrained  # noqa: E402
from stjax.errors import UserError  # noqa: E402
from stjax.models import build_model as _build_model  # noqa: E402
from stjax.models.backbones.llama import Llama, LlamaAttention, LlamaConfig, rope_inverse_frequencies  # noqa: E402
from stjax.models.st_link.se_attention import SELlamaAttention, SERotary, se_rotate  # noqa: E402
from stjax.train import optim  # noqa: E402

# GQA (4 query heads, 2 K/V heads, head dim 8) with llama3 rope scaling whose three bands all occur.
ROPE = {
  "rope_type": "llama3",
  "factor": 8.0,
  "low_freq_factor": 1.0,
  "high_freq_factor": 4.0,
  "original_max_position_embeddings": 64,
}
LLAMA = LlamaConfig(
  vocab_size=40,
  hidden_size=32,
  intermediate_size=48,
  num_hidden_layers=3,
  num_attention_heads=4,
  num_key_value_heads=2,
  head_dim=8,
  rope_theta=10000.0,
  rope_type="llama3",
  rope_factor=8.0,
  rope_original_max_positions=64,
  causal=False,
)


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
  """A random tiny HF LlamaModel (3 blocks) saved with save_pretrained."""
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
    vocab_size=40,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    rope_theta=10000.0,
    rope_scaling=dict(ROPE),
    tie_word_embeddings=True,
  )
  model = transformers.LlamaModel(cfg)
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.copy_(
        1.0 + 0.3 * torch.randn(p.shape, generator=gen)
        if name.endswith("norm.weight")
        else 0.15 * torch.randn(p.shape, generator=gen)
      )
  folder = tmp_path_factory.mktemp("st_link_llama")
  model.save_pretrained(folder)
  return folder


def build_model(config, spec):
  """As the experiment builds a model: the pretrained backbone's config read by convert first."""
  return _build_model(config, spec, pretrained_config=backbone_config_of(config))


def llama_config(folder, **changes):
  return tiny_config(
    **{"backbone": "llama", "pretrained": str(folder), "temporal_dims": 4, "dropout": 0.0, **changes}
  )


SPEC = make_spec(tuple(range(-11, 1)), 12, 1, 1)


def init(model, batch):
  return jax.jit(lambda b: nn.meta.unbox(model.init({"params": jax.random.key(0)}, b)))(batch)


def leaves(tree):
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_pretrained_llama_loads_into_llm_exactly(llama_folder, rng):
  config = llama_config(llama_folder)
  model = build_model(config, SPEC)  # pretrained is set: no random-init warning
  assert model.llm.hidden_size == 32 and model.llm.num_hidden_layers == 2  # geometry from config.json
  assert model.llm.rope_type == "llama3" and model.llm.causal is False
  shapes = jax.eval_shape(
    lambda b: nn.meta.unbox(model.init({"params": jax.random.key(0)}, b)), make_batch(rng, SPEC)
  )
  variables = jax.tree.map(lambda a: np.full(a.shape, 0.5, a.dtype), shapes)  # merging needs shapes only
  merged = merge_pretrained(config, variables["params"])
  _, want = hf_llama.load(llama_folder, num_layers=2)
  got, ref = leaves(merged["llm"]), leaves(want)
  new = {k for k in got if "extra_ffn" in k}
  assert new and set(got) == set(ref) | new  # same tree as the converted model plus MRFFN
  for key, value in ref.items():
    assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key
  assert "['layers_1']['extra_ffn']['memory']['values']" in new and not any("layers_0" in k for k in new)
  for key in new:  # new modules keep their init
    np.testing.assert_array_equal(got[key], 0.5)


@pytest.mark.parametrize("causal", [False, True])
def test_se_llama_with_all_time_dims_is_llama_rope(rng, causal):
  """split, temporal_dims = head_dim (no space dims), time frequencies = Llama's own: exactly
  LlamaAttention at the same positions (random weights and inputs, GQA, llama3 frequencies)."""
  cfg = LLAMA.replace(causal=causal)
  seq = 11
  h = jnp.asarray(rng.normal(size=(2, seq, 32)), jnp.float32)
  positions = jnp.asarray(rng.uniform(-40, 40, size=seq), jnp.float32)  # any real offsets, all bands
  rot = SERotary(8, "split", 8, time_frequencies=tuple(float(w) for w in rope_inverse_frequencies(cfg)))
  angles = rot.apply({}, positions, jnp.zeros((1, 3)), jnp.zeros((seq,), jnp.int32))
  assert angles["space_angles"].shape == (seq, 0)
  plain = LlamaAttention(cfg)
  params = plain.init(jax.random.key(0), h, deterministic=True)
  params = jax.tree.map(
    lambda _: jnp.asarray(rng.normal(size=_.shape) * 0.4, jnp.float32), nn.meta.unbox(params)
  )
  want = plain.apply(params, h, deterministic=True, positions=positions)
  got = SELlamaAttention(cfg, mode="split", temporal_dims=8).apply(params, h, deterministic=True, **angles)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert (
    float(
      jnp.abs(
        want - plain.apply(params, h, deterministic=True, positions=positions + 1.5 * jnp.arange(seq))
      ).max()
    )
    > 1e-2
  )


def _rotate_pairs_np(x, angles):
  """float64: pair (j, j + D/2) turned by angles[..., j] (explicit 2x2 rotations, Llama's pairing)."""
  out = np.empty_like(x)
  half = x.shape[-1] // 2
  for j in range(half):
    c, s = np.cos(angles[..., j]), np.sin(angles[..., j])
    out[..., j] = c * x[..., j] - s * x[..., j + half]
    out[..., j + half] = s * x[..., j] + c * x[..., j + half]
  return out


def se_llama_reference(h, params, cfg, time_angles, space_angles, mode):
  """float64 NumPy SE-Llama attention (GQA by repeating K/V heads; no RoPE of its own)."""
  h = np.asarray(h, np.float64)
  b, s, _ = h.shape
  hq, hkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
  w = {k: np.asarray(v["kernel"], np.float64) for k, v in params.items()}
  q = (h @ w["q_proj"]).reshape(b, s, hq, hd)
  k = (h @ w["k_proj"]).reshape(b, s, hkv, hd)
  v = (h @ w["v_proj"]).reshape(b, s, hkv, hd)
  ta, sa = np.asarray(time_angles, np.float64)[:, None], np.asarray(space_angles, np.float64)[:, None]

  def attn(qr, kr):
    kr, vr = np.repeat(kr, hq // hkv, axis=2), np.repeat(v, hq // hkv, axis=2)
    logits = np.einsum("bqhd,bkhd->bhqk", qr, kr) / np.sqrt(hd)
    if cfg.causal:
      logits = np.where(np.tril(np.ones((s, s), bool)), logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, vr).reshape(b, s, hq * hd)

  if mode == "split":
    both = np.concatenate(
      [np.broadcast_to(ta, (s, 1, ta.shape[-1])), np.broadcast_to(sa, (s, 1, sa.shape[-1]))], -1
    )
    o = attn(_rotate_pairs_np(q, both), _rotate_pairs_np(k, both))
  else:
    o = np.concatenate(
      [
        attn(_rotate_pairs_np(q, ta), _rotate_pairs_np(k, ta)),
        attn(_rotate_pairs_np(q, sa), _rotate_pairs_np(k, sa)),
      ],
      -1,
    )
    o = o @ w["merge"]
  return o @ w["o_proj"]


@pytest.mark.parametrize("mode,causal", [("split", False), ("split", True), ("dual", False)])
def test_se_llama_attention_matches_numpy(rng, mode, causal):
  cfg = LLAMA.replace(causal=causal)
  seq = 9
  td, sd = (4, 4) if mode == "split" else (8, 8)
  time_angles = jnp.asarray(rng.normal(size=(seq, td // 2)) * 2, jnp.float32)
  space_angles = jnp.asarray(rng.normal(size=(seq, sd // 2)) * 2, jnp.float32)
  h = jnp.asarray(rng.normal(size=(2, seq, 32)), jnp.float32)
  attn = SELlamaAttention(cfg, mode=mode, temporal_dims=4)
  kw = dict(time_angles=time_angles, space_angles=space_angles)
  params = nn.meta.unbox(attn.init(jax.random.key(0), h, deterministic=True, **kw))["params"]
  params = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.4, jnp.float32), params)
  got = attn.apply({"params": params}, h, deterministic=True, **kw)
  want = se_llama_reference(h, params, cfg, time_angles, space_angles, mode)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  # The rotation alone, on q-like [batch, seq, heads, head_dim] values: float64 reference to 1e-6.
  x = rng.normal(size=(2, seq, 3, 8))
  rotated = se_rotate(
    jnp.asarray(x, jnp.float32), time_angles, space_angles, mode=mode, temporal_dims=4, layout="pairs"
  )
  if mode == "split":
    ref = _rotate_pairs_np(
      x, np.concatenate([np.asarray(time_angles), np.asarray(space_angles)], -1)[:, None]
    )
  else:
    ref = np.concatenate(
      [
        _rotate_pairs_np(x, np.asarray(time_angles)[:, None]),
        _rotate_pairs_np(x, np.asarray(space_angles)[:, None]),
      ],
      axis=2,
    )
  np.testing.assert_allclose(rotated, ref, rtol=1e-6, atol=1e-6)


def test_no_se_llama_uses_its_rope_at_the_patch_index(llama_folder, rng):
  """se_attention=False: the trunk sees the tokens with positions = patch index (0..P-1 per node)."""
  model = build_model(llama_config(llama_folder, se_attention=False, mrffn=False), SPEC)
  batch = make_batch(rng, SPEC)
  variables = init(model, batch)
  _, inter = jax.jit(lambda v, b: model.apply(v, b, capture_intermediates=True, mutable=["intermediates"]))(
    variables, batch
  )
  tokens = inter["intermediates"]["token_embedding"]["__call__"][0]
  hidden = inter["intermediates"]["llm"]["__call__"][0]
  positions = jnp.asarray(np.tile(np.arange(4), 3))
  want = jax.jit(
    lambda p, x: Llama(model.llm).apply({"params": p}, x, attention_kwargs={"positions": positions})
  )(variables["params"]["llm"], tokens.reshape(2, 12, -1))
  np.testing.assert_allclose(hidden[0], want, rtol=1e-5, atol=1e-5)  # the trunk returns (hidden, aux)


@pytest.fixture(scope="module")
def trained(llama_folder):
  """30 Adam steps of a pretrained tiny Llama ST-LINK under pfa(1), MRFFN in the last block."""
  rng = np.random.default_rng(11)
  config = llama_config(llama_folder)
  model = build_model(config, SPEC)
  batch = make_batch(rng, SPEC, b=4)
  y = jnp.asarray(rng.normal(size=(4, 12, 3, 1)) * 2 + 1, jnp.float32)
  variables = init(model, batch)
  params = merge_pretrained(config, jax.device_get(variables["params"]))
  mask = optim.trainable_mask(params, "pfa(1)")
  cfg = optim.default_optim_config()
  cfg.name, cfg.learning_rate = "adam", 1e-2
  tx, _ = optim.make_optimizer(cfg, params, mask)

  step = mae_train_step(model, tx, y)

  p, opt_state, memory, losses = params, tx.init(params), variables["memory"], []
  for i in range(30):
    p, opt_state, memory, mae = step(p, opt_state, memory, batch, jax.random.key(i))
    losses.append(float(mae))
  return dict(start=params, memory0=variables["memory"], params=p, memory=memory, mask=mask, losses=losses)


def test_pfa_training_on_llama(trained):
  losses = trained["losses"]
  print(f"ST-LINK Llama pfa(1), 30 Adam steps: MAE {losses[0]:.3f} -> {losses[-1]:.4f}")
  assert np.all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0]
  mask = {jax.tree_util.keystr(p): t for p, t in jax.tree_util.tree_leaves_with_path(trained["mask"])}
  before, after = leaves(trained["start"]), leaves(trained["params"])
  for key, trainable in mask.items():
    if trainable:
      assert np.any(before[key] != after[key]), f"{key} trains but did not move"
    else:
      assert np.array_equal(before[key], after[key]), f"{key} is frozen but moved"
  frozen = {k for k, t in mask.items() if not t}
  assert "['llm']['embed_tokens']['embedding']" in frozen
  assert "['llm']['layers_0']['self_attn']['q_proj']['kernel']" in frozen  # lower attention frozen
  assert "['llm']['layers_1']['mlp']['gate_proj']['kernel']" in frozen  # pretrained SwiGLU frozen
  assert "['llm']['layers_1']['self_attn']['k_proj']['kernel']" not in frozen  # upper attention trains
  assert "['llm']['layers_1']['extra_ffn']['memory']['values']" not in frozen  # MRFFN trains
  keys0 = trained["memory0"]["llm"]["layers_1"]["extra_ffn"]["memory"]["keys"]
  keys1 = trained["memory"]["llm"]["layers_1"]["extra_ffn"]["memory"]["keys"]
  assert not np.allclose(keys0, keys1)
  np.testing.assert_allclose(np.linalg.norm(keys1, axis=-1), 1.0, rtol=1e-5)


def test_full_and_lora_policies_on_llama_trees(trained):
  params = trained["start"]
  assert all(jax.tree.leaves(optim.trainable_mask(params, "full")))
  with pytest.raises(UserError, match="no lora_a/lora_b"):  # ST-LINK has no adapters, on either backbone
    optim.trainable_mask(params, "lora")
  llama = Llama(LLAMA.replace(lora_rank=2, num_hidden_layers=2))
  shapes = jax.eval_shape(lambda: nn.meta.unbox(llama.init(jax.random.key(0), jnp.zeros((1, 2, 32)))))[
    "params"
  ]
  mask = optim.trainable_mask({"llm": shapes, "head": {"kernel": jnp.zeros(2)}}, "lora")
  for path, t in jax.tree_util.tree_leaves_with_path(mask):
    name = jax.tree_util.keystr(path)
    assert t == (name.startswith("['head']") or name.endswith(("['lora_a']", "['lora_b']"))), name
  assert sum(jax.tree.leaves(mask)) == 1 + 2 * 2 * 7  # head + (A, B) x 7 projections x 2 blocks


def test_bad_llama_configs_are_user_errors(llama_folder, tmp_path):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    with pytest.raises(UserError) as e:
      build_model(tiny_config(backbone="t5"), SPEC)
    assert_one_line(e, "config.model.backbone", "'t5'")
    with pytest.raises(UserError) as e:  # a Llama folder given to the GPT-2 backbone
      build_model(tiny_config(pretrained=str(llama_folder)), SPEC)
    assert_one_line(e, "config.model.backbone", "'gpt2'", "llama model")
    with pytest.raises(UserError) as e:
      build_model(llama_config(llama_folder, llm_layers=4, unfrozen_layers=1), SPEC)
    assert_one_line(e, "config.model.llm_layers", "4", "3 blocks")
    with pytest.raises(UserError) as e:  # more time dims than the head dim 8
      build_model(llama_config(llama_folder, temporal_dims=10), SPEC)
    assert_one_line(e, "model.temporal_dims", "head dim 8")
    with pytest.raises(UserError) as e:
      build_model(llama_config(tmp_path / "nothing"), SPEC)
    assert_one_line(e, "nothing", "no such folder")
    with pytest.raises(UserError) as e:
      build_model(llama_config(llama_folder, se_mode="both"), SPEC)
    assert_one_line(e, "model.se_mode", "'both'")
