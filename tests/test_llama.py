"""Llama backbone: parity with Hugging Face transformers (PyTorch), conversion round trips, errors.

A tiny random HF Llama (GQA: 4 heads, 2 K/V heads; llama3 rope scaling chosen so that the kept,
interpolated and fully scaled frequency bands all occur) is saved with save_pretrained, converted,
and run on the same random `inputs_embeds` of 520 tokens (short inputs hide position bugs).
"""

import dataclasses
import functools
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from helpers import assert_one_line  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from stjax.convert import backbones as convert_backbones  # noqa: E402
from stjax.convert import hf_llama  # noqa: E402
from stjax.errors import UserError  # noqa: E402
from stjax.models import backbones  # noqa: E402
from stjax.models.backbones.llama import Llama, LlamaConfig, num_params, rope_inverse_frequencies  # noqa: E402

SEQ = 520
ROPE = {
  "rope_type": "llama3",
  "factor": 8.0,
  "low_freq_factor": 1.0,
  "high_freq_factor": 4.0,
  "original_max_position_embeddings": 64,
}


def _hf_config(**changes):
  fields = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    rope_scaling=dict(ROPE),
    tie_word_embeddings=True,
  )
  fields.update(changes)
  return transformers.LlamaConfig(**fields)


def _randomise(model, seed):
  """Weights far from init (norm scales around 1, not exactly 1) so every tensor matters."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
      else:
        p.copy_(0.15 * torch.randn(p.shape, generator=gen))
  return model.eval()


@pytest.fixture(scope="module")
def tied_model(tmp_path_factory):
  """A LlamaModel (no prefix, tied) saved as one model.safetensors."""
  torch.manual_seed(0)
  model = _randomise(transformers.LlamaModel(_hf_config()), seed=1)
  folder = tmp_path_factory.mktemp("llama_tied")
  model.save_pretrained(folder)
  return model, folder


@pytest.fixture(scope="module")
def untied_sharded_model(tmp_path_factory):
  """A LlamaForCausalLM ("model." prefix, own lm_head) saved as sharded safetensors + index."""
  torch.manual_seed(0)
  model = _randomise(transformers.LlamaForCausalLM(_hf_config(tie_word_embeddings=False)), seed=2)
  folder = tmp_path_factory.mktemp("llama_untied")
  model.save_pretrained(folder, max_shard_size="20KB")
  assert (folder / "model.safetensors.index.json").is_file()
  return model, folder


def _reference(trunk, x, **kwargs):
  with torch.no_grad():
    return trunk(inputs_embeds=torch.from_numpy(x), **kwargs).last_hidden_state.numpy()


@functools.lru_cache(maxsize=None)
def _forward(config):
  return jax.jit(lambda p, x, kw: Llama(config).apply({"params": p}, x, attention_kwargs=kw))


def _ours(config, params, x, attention_kwargs=None):
  """Our trunk's last hidden state (jitted once per config and shape, not op by op)."""
  return np.asarray(_forward(config)(params, jnp.asarray(x), attention_kwargs))


def test_parity_causal_full_depth(tied_model, rng):
  model, folder = tied_model
  config, params = hf_llama.load(folder)
  assert (config.num_attention_heads, config.num_key_value_heads, config.rope_type) == (4, 2, "llama3")
  x = rng.normal(size=(2, SEQ, 32)).astype(np.float32)
  ref = _reference(model, x)
  diff = np.abs(_ours(config, params, x) - ref).max()
  assert diff <= 1e-4, diff
  assert np.abs(ref).max() > 0.5  # a real signal, not a vanishing one


def test_parity_truncated_sharded_untied_full_attention_and_positions(untied_sharded_model, rng):
  model, folder = untied_sharded_model
  config, params = hf_llama.load(folder, num_layers=2)
  assert config.num_hidden_layers == 2 and sorted(params) == ["embed_tokens", "layers_0", "layers_1", "norm"]
  trunk = transformers.LlamaModel(_hf_config(tie_word_embeddings=False, num_hidden_layers=2)).eval()
  trunk.load_state_dict({k: v for k, v in model.model.state_dict().items() if not k.startswith("layers.2.")})
  x = rng.normal(size=(2, SEQ, 32)).astype(np.float32)
  # causal
  diff = np.abs(_ours(config, params, x) - _reference(trunk, x)).max()
  assert diff <= 1e-4, diff
  # full attention (all-zero additive 4-D mask in HF) with per-example positions
  positions = np.stack([np.arange(SEQ) + 7, np.arange(SEQ) * 2]).astype(np.int64)
  ref = _reference(
    trunk, x, attention_mask=torch.zeros(2, 1, SEQ, SEQ), position_ids=torch.from_numpy(positions)
  )
  ours = _ours(
    config.replace(causal=False), params, x, attention_kwargs={"positions": jnp.asarray(positions)}
  )
  diff = np.abs(ours - ref).max()
  assert diff <= 1e-4, diff
  assert np.abs(ours - _ours(config, params, x)).max() > 1e-2  # the flags really changed something


def test_rope_frequencies_match_hf():
  hf = _hf_config()
  inv_hf, _ = transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS["llama3"](hf, "cpu")
  config = LlamaConfig.from_hf(hf.to_dict())
  ours = rope_inverse_frequencies(config)
  np.testing.assert_allclose(ours, inv_hf.numpy(), rtol=1e-6)
  # all three llama3 bands occur: kept, smoothed, divided by the factor
  plain = rope_inverse_frequencies(config.replace(rope_type="default"))
  ratio = ours / plain
  assert np.isclose(ratio, 1.0).any() and np.isclose(ratio, 1 / 8).any()
  assert ((ratio < 0.99) & (ratio > 0.13)).any()


def test_round_trip_convert_export_reload_exact(untied_sharded_model, tmp_path):
  model, folder = untied_sharded_model
  config, params, ckpt = hf_llama.convert(folder, tmp_path / "ckpt")
  assert json.loads((ckpt / "config.json").read_text())["format"] == hf_llama.FORMAT
  config2, params2 = hf_llama.load(ckpt)
  assert config2 == config
  jax.tree_util.tree_map(np.testing.assert_array_equal, params2, params)
  out = hf_llama.export(config2, params2, tmp_path / "hf")
  hf_config = json.loads((out / "config.json").read_text())
  assert hf_config["rope_scaling"]["rope_type"] == "llama3" and hf_config["tie_word_embeddings"] is False
  reloaded = transformers.LlamaModel.from_pretrained(out).eval()
  original = model.model.state_dict()
  for name, tensor in reloaded.state_dict().items():
    assert torch.equal(tensor, original[name]), name
  assert LlamaConfig.from_hf(hf_config) == config


def test_lora_starts_as_identity_and_merges_on_export(tied_model, rng):
  _, folder = tied_model
  config, params = hf_llama.load(folder, num_layers=1)
  lcfg = config.replace(lora_rank=2, lora_alpha=4.0)
  shapes = nn.unbox(jax.eval_shape(Llama(lcfg).init, jax.random.PRNGKey(0), jnp.zeros((1, 4, 32)))["params"])
  attn = shapes["layers_0"]["self_attn"]
  assert set(attn["q_proj"]) == {"kernel", "lora_a", "lora_b"} and "bias" not in attn["q_proj"]
  assert attn["k_proj"]["lora_a"].shape == (32, 2) and attn["k_proj"]["lora_b"].shape == (2, 16)
  assert set(shapes["layers_0"]["mlp"]["down_proj"]) == {"kernel", "lora_a", "lora_b"}
  # pretrained kernels + fresh adapters (A random, B zero, as LoRADense initialises them)
  merged_in = jax.tree_util.tree_map_with_path(
    lambda path, leaf: (
      np.zeros(leaf.shape, np.float32)
      if path[-1].key == "lora_b"
      else rng.normal(size=leaf.shape).astype(np.float32)
    ),
    shapes,
  )
  for group in ("self_attn", "mlp"):
    for name, leaf in merged_in["layers_0"][group].items():
      leaf["kernel"] = params["layers_0"][group][name]["kernel"]
  for key in ("embed_tokens", "norm"):
    merged_in[key] = params[key]
  merged_in["layers_0"]["input_layernorm"] = params["layers_0"]["input_layernorm"]
  merged_in["layers_0"]["post_attention_layernorm"] = params["layers_0"]["post_attention_layernorm"]
  x = rng.normal(size=(1, 16, 32)).astype(np.float32)
  np.testing.assert_allclose(_ours(lcfg, merged_in, x), _ours(config, params, x), atol=1e-6)
  # a trained adapter: export folds alpha/rank * A @ B into the kernel
  b = rng.normal(size=(2, 32)).astype(np.float32)
  merged_in["layers_0"]["self_attn"]["q_proj"]["lora_b"] = b
  tensors = hf_llama.to_hf_tensors(lcfg, merged_in)
  a = np.asarray(merged_in["layers_0"]["self_attn"]["q_proj"]["lora_a"])
  want = params["layers_0"]["self_attn"]["q_proj"]["kernel"] + 2.0 * a @ b
  np.testing.assert_allclose(tensors["layers.0.self_attn.q_proj.weight"], want.T, rtol=1e-6, atol=1e-6)
  # ... and the adapted model equals the plain model with the merged kernel
  merged = jax.tree_util.tree_map(np.asarray, params)
  merged["layers_0"]["self_attn"]["q_proj"]["kernel"] = want
  adapted = _ours(lcfg, merged_in, x)
  np.testing.assert_allclose(adapted, _ours(config, merged, x), atol=1e-4)
  assert np.abs(adapted - _ours(config, params, x)).max() > 1e-2


def test_bfloat16_compute_close_to_float32(tied_model, rng):
  _, folder = tied_model
  config, params = hf_llama.load(folder, num_layers=1)
  x = rng.normal(size=(1, 64, 32)).astype(np.float32)
  out16 = jax.jit(Llama(config.replace(dtype="bfloat16")).apply)({"params": params}, jnp.asarray(x))
  assert out16.dtype == jnp.bfloat16
  ref = _ours(config, params, x)
  err = np.abs(np.asarray(out16, np.float32) - ref).max() / np.abs(ref).max()
  assert err < 5e-2, err


def test_bad_inputs_give_one_clear_line(tied_model, tmp_path):
  _, folder = tied_model
  tensors = load_file(str(folder / "model.safetensors"))
  config_json = json.loads((folder / "config.json").read_text())

  def write(name, tensors, config):
    d = tmp_path / name
    d.mkdir()
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    (d / "config.json").write_text(json.dumps(config))
    return d

  missing = write(
    "missing", {k: v for k, v in tensors.items() if k != "layers.1.mlp.up_proj.weight"}, config_json
  )
  with pytest.raises(UserError) as e:
    hf_llama.convert(missing, tmp_path / "out_missing")
  assert_one_line(e, "missing tensors", "layers.1.mlp.up_proj.weight")
  assert not (tmp_path / "out_missing").exists()  # nothing half-written

  shape = write("shape", tensors, {**config_json, "intermediate_size": 40})
  with pytest.raises(UserError) as e:
    hf_llama.load(shape)
  assert_one_line(e, "gate_proj.weight", "(48, 32)", "(40, 32)")

  with pytest.raises(UserError) as e:
    hf_llama.load(folder, num_layers=4)
  assert_one_line(e, "num_layers", "4", "3 layers")

  rope = write("rope", tensors, {**config_json, "rope_parameters": {"rope_type": "yarn", "factor": 4.0}})
  with pytest.raises(UserError) as e:
    hf_llama.load(rope)
  assert_one_line(e, "config.json", "yarn")

  gpt = write("gpt", tensors, {**config_json, "model_type": "gpt2"})
  with pytest.raises(UserError) as e:
    hf_llama.load(gpt)
  assert_one_line(e, "config.json", "gpt2")


def test_backbones_dispatch_and_token_table(tied_model, tmp_path, rng):
  model, folder = tied_model
  config, params = convert_backbones.load_backbone(folder, num_layers=1)
  assert isinstance(config, LlamaConfig) and backbones.backbone_name(config) == "llama"
  assert (backbones.hidden_size(config), backbones.num_layers(config)) == (32, 1)
  np.testing.assert_array_equal(
    backbones.token_embedding_table(params), model.embed_tokens.weight.detach().numpy()
  )
  _, _, ckpt = hf_llama.convert(folder, tmp_path / "ckpt", num_layers=2)
  config2, _ = convert_backbones.load_backbone(ckpt)
  assert config2.num_hidden_layers == 2
  module = backbones.build_backbone("llama", dataclasses.asdict(config))
  x = rng.normal(size=(1, 8, 32)).astype(np.float32)
  np.testing.assert_array_equal(
    np.asarray(jax.jit(module.apply)({"params": params}, jnp.asarray(x))), _ours(config, params, x)
  )

  gpt2_folder = tmp_path / "gpt2"
  transformers.GPT2Model(
    transformers.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=50, n_positions=32)
  ).save_pretrained(gpt2_folder)
  gcfg, gparams = convert_backbones.load_backbone(gpt2_folder)
  assert backbones.backbone_name(gcfg) == "gpt2" and backbones.hidden_size(gcfg) == 16
  assert backbones.token_embedding_table(gparams).shape == (50, 16)

  other = tmp_path / "t5"
  other.mkdir()
  (other / "config.json").write_text(json.dumps({"model_type": "t5"}))
  with pytest.raises(UserError) as e:
    convert_backbones.load_backbone(other)
  assert_one_line(e, "t5", "supported backbones: bert, gpt2, llama")
  with pytest.raises(UserError):
    backbones.build_backbone("t5", None)


def test_llama_3_2_1b_geometry_param_count_and_axes():
  """Exact count from shapes only (jax.eval_shape): the published 1.24B (tied embeddings)."""
  config = LlamaConfig()
  d, v, f, kv = 2048, 128256, 8192, 8 * 64
  per_layer = 2 * d * d + 2 * d * kv + 3 * d * f + 2 * d
  assert num_params(config) == v * d + 16 * per_layer + d == 1_235_814_400
  boxed = jax.eval_shape(
    lambda: Llama(config.replace(num_hidden_layers=1)).init(jax.random.PRNGKey(0), jnp.zeros((1, 1, d)))
  )["params"]
  specs = nn.get_partition_spec(boxed)
  assert specs["embed_tokens"]["embedding"] == jax.sharding.PartitionSpec("vocab", "embed")
  layer = specs["layers_0"]
  assert layer["self_attn"]["k_proj"]["kernel"] == jax.sharding.PartitionSpec("embed", "kv_heads")
  assert layer["self_attn"]["o_proj"]["kernel"] == jax.sharding.PartitionSpec("heads", "embed")
  assert layer["mlp"]["down_proj"]["kernel"] == jax.sharding.PartitionSpec("mlp", "embed")
  for path, spec in jax.tree_util.tree_leaves_with_path(
    specs, is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec)
  ):
    assert all(a is not None for a in spec), path
  assert math.isclose(num_params(config) / 1e9, 1.24, abs_tol=0.005)


def test_trainability_policies_know_llama_names():
  """PFA(U) on Llama: embeddings frozen; q/k/v/o train only in the last U blocks; the SwiGLU MLP
  stays frozen; RMSNorms and new modules train. LoRA: only the adapters train."""
  from stjax.train import optim

  cfg = LlamaConfig(**{**dataclasses.asdict(LlamaConfig.from_hf(_hf_config().to_dict())), "lora_rank": 2})
  shapes = nn.unbox(jax.eval_shape(Llama(cfg).init, jax.random.PRNGKey(0), jnp.zeros((1, 4, 32)))["params"])
  params = {"llm": shapes, "head": {"kernel": jax.ShapeDtypeStruct((32, 4), jnp.float32)}}
  mask = optim.trainable_mask(params, "pfa(1)")["llm"]
  assert not mask["embed_tokens"]["embedding"] and mask["norm"]["scale"]
  for i in range(3):
    layer = mask[f"layers_{i}"]
    assert layer["self_attn"]["q_proj"]["kernel"] == (i == 2)
    assert layer["self_attn"]["o_proj"]["kernel"] == (i == 2)
    assert not layer["mlp"]["gate_proj"]["kernel"] and not layer["mlp"]["down_proj"]["kernel"]
    assert layer["input_layernorm"]["scale"] and layer["post_attention_layernorm"]["scale"]
    assert layer["mlp"]["up_proj"]["lora_a"]
  lora = jax.tree_util.tree_leaves_with_path(optim.trainable_mask(params, "lora")["llm"])
  assert {p[-1].key for p, t in lora if t} == {"lora_a", "lora_b"}


def test_cli_convert_and_export(tied_model, tmp_path, capsys):
  from stjax.convert.__main__ import main

  _, folder = tied_model
  main(["llama", f"--source={folder}", f"--output={tmp_path / 'ckpt'}", "--num-layers=2"])
  out = capsys.readouterr().out
  assert "Llama, 2 layers, width 32, 4 heads (2 K/V) of 8, mlp 48, vocab 96, rope llama3" in out
  assert "parameters: 18,592" in out  # 96*32 + 2*(2*32*32 + 2*32*16 + 3*32*48 + 2*32) + 32
  main(["export", f"--source={tmp_path / 'ckpt'}", f"--output={tmp_path / 'hf'}"])
  assert "exported" in capsys.readouterr().out
  assert transformers.LlamaModel.from_pretrained(tmp_path / "hf").config.num_hidden_layers == 2
  capsys.readouterr()  # drop transformers' progress output
  with pytest.raises(SystemExit) as e:
    main(["llama", f"--source={folder}", f"--output={tmp_path / 'bad'}", "--num-layers=9"])
  assert e.value.code == 2 and not (tmp_path / "bad").exists()
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("stjax: error: num_layers: 9 exceeds")
