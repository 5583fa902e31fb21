"""BERT encoder: parity with Hugging Face transformers (PyTorch) on a random tiny BERT and on the real
all-MiniLM-L6-v2, conversion round trips, task-head and legacy checkpoints, LoRA, bad input.

Parity runs at 17 and 512 tokens (512 = the whole position table; short inputs hide position
bugs), with and without a padding mask, and compares every position (HF's masked positions still
attend to the unmasked keys, as ours do).
"""

import functools
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from helpers import assert_one_line  # noqa: E402

from stjax.convert import hf_bert  # noqa: E402
from stjax.convert.__main__ import main as convert_main  # noqa: E402
from stjax.convert.hf_common import overlay  # noqa: E402
from stjax.errors import UserError  # noqa: E402
from stjax.layers.lora import merge_lora  # noqa: E402
from stjax.models.backbones.bert import Bert, BertConfig  # noqa: E402
from stjax.sharding import DEFAULT_RULES  # noqa: E402

SHAPE = dict(
  vocab_size=64,
  hidden_size=32,
  num_hidden_layers=3,
  num_attention_heads=4,
  intermediate_size=48,
  max_position_embeddings=512,
  type_vocab_size=2,
)


def _randomise(model, seed):
  """Weights far from init (LayerNorm scales around 1, biases non-zero) so every tensor matters."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("LayerNorm.weight"):
        p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
      else:
        p.copy_(0.15 * torch.randn(p.shape, generator=gen))
  return model.eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """A random BertModel (with its pooler) saved with save_pretrained as one model.safetensors."""
  model = _randomise(transformers.BertModel(transformers.BertConfig(**SHAPE)), seed=1)
  folder = tmp_path_factory.mktemp("bert_tiny")
  model.save_pretrained(folder)
  return model, folder


def _reference(model, x=None, ids=None, mask=None, types=None):
  """HF's last hidden state (float32, eval) for inputs_embeds x or input_ids."""
  as_torch = lambda a: None if a is None else torch.from_numpy(np.asarray(a))  # noqa: E731
  with torch.no_grad():
    return model(
      inputs_embeds=as_torch(x),
      input_ids=as_torch(ids),
      attention_mask=as_torch(mask),
      token_type_ids=as_torch(types),
    ).last_hidden_state.numpy()


@functools.lru_cache(maxsize=None)
def _forward(config):
  return jax.jit(
    lambda p, x, ids, mask, types: Bert(config).apply(
      {"params": p}, x, input_ids=ids, attention_mask=mask, token_type_ids=types
    )
  )


def _ours(config, params, x=None, ids=None, mask=None, types=None):
  return np.asarray(_forward(config)(params, x, ids, mask, types))


def _mask(rng, batch, seq):
  """[batch, seq] int64 0/1: random holes, the second row padded from the middle on."""
  mask = (rng.random((batch, seq)) > 0.3).astype(np.int64)
  mask[:, 0] = 1
  mask[1, seq // 2 :] = 0
  return mask


@pytest.mark.parametrize("seq", [17, 512])
def test_parity_random_tiny_with_and_without_mask(tiny, rng, seq):
  model, folder = tiny
  config, params = hf_bert.load(folder)
  assert config == BertConfig(**SHAPE, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
  x = rng.normal(size=(2, seq, 32)).astype(np.float32)
  mask = _mask(rng, 2, seq)
  ref_plain, ref_masked = _reference(model, x), _reference(model, x, mask=mask)
  for ref, m in ((ref_plain, None), (ref_masked, mask)):
    diff = np.abs(_ours(config, params, x, mask=m) - ref).max()
    assert diff <= 1e-4, (seq, m is not None, diff)
  assert np.abs(ref_masked - ref_plain).max() > 1e-2  # the mask really changed the outputs
  assert np.abs(ref_plain).max() > 0.5  # a real signal, not a vanishing one


def test_input_ids_and_token_types(tiny, rng):
  model, folder = tiny
  config, params = hf_bert.load(folder)
  ids = rng.integers(0, 64, size=(2, 17))
  types = rng.integers(0, 2, size=(2, 17))
  mask = _mask(rng, 2, 17)
  diff = np.abs(
    _ours(config, params, ids=ids, mask=mask, types=types)
    - _reference(model, ids=ids, mask=mask, types=types)
  ).max()
  assert diff <= 1e-4, diff
  table = params["embeddings"]["word_embeddings"]["embedding"]
  np.testing.assert_allclose(
    _ours(config, params, x=table[ids], mask=mask), _ours(config, params, ids=ids, mask=mask), atol=1e-6
  )


def test_cli_round_trip_bit_exact(tiny, rng, tmp_path, capsys):
  model, folder = tiny
  assert convert_main(["bert", f"--source={folder}", f"--output={tmp_path / 'ckpt'}"]) == 0
  out = capsys.readouterr().out
  assert "BERT, 3 layers, width 32, 4 heads, mlp 48, vocab 64, positions 512, 2 token types" in out
  # 64*32 + 512*32 + 2*32 + 2*32 + 3 * (4*(32*32 + 32) + (32*48 + 48) + (48*32 + 32) + 2*2*32)
  assert "parameters: 41,072" in out
  assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["format"] == hf_bert.FORMAT
  assert convert_main(["export", f"--source={tmp_path / 'ckpt'}", f"--output={tmp_path / 'hf'}"]) == 0
  assert "exported" in capsys.readouterr().out
  hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert hf_config["model_type"] == "bert" and BertConfig.from_hf(hf_config) == hf_bert.load(folder)[0]
  reloaded = transformers.BertModel.from_pretrained(tmp_path / "hf", add_pooling_layer=False).eval()
  original = model.state_dict()
  state = reloaded.state_dict()
  assert sorted(state) == sorted(k for k in original if not k.startswith("pooler."))
  for name, tensor in state.items():
    assert torch.equal(tensor, original[name]), name
  x = rng.normal(size=(2, 17, 32)).astype(np.float32)
  mask = _mask(rng, 2, 17)
  np.testing.assert_array_equal(_reference(reloaded, x, mask=mask), _reference(model, x, mask=mask))
  # the default BertModel (with a pooler, initialised afresh) loads the folder too
  with_pooler = transformers.BertModel.from_pretrained(tmp_path / "hf").eval()
  np.testing.assert_array_equal(_reference(with_pooler, x), _reference(model, x))


def test_masked_lm_and_legacy_checkpoints_load(tiny, tmp_path):
  model, folder = tiny
  config, params = hf_bert.load(folder)
  trunk = {k: v.numpy() for k, v in model.state_dict().items() if not k.startswith("pooler.")}
  # BertForMaskedLM: trunk under "bert.", an MLM head "cls.*", no pooler
  mlm = _randomise(transformers.BertForMaskedLM(transformers.BertConfig(**SHAPE)), seed=2)
  mlm.save_pretrained(tmp_path / "mlm")
  assert any(k.startswith("cls.") for k in mlm.state_dict())
  mlm_config, mlm_params = hf_bert.load(tmp_path / "mlm", num_layers=2)
  assert mlm_config.num_hidden_layers == 2 and sorted(mlm_params) == ["embeddings", "layer_0", "layer_1"]
  for name, value in hf_bert.to_hf_tensors(mlm_config, mlm_params).items():
    np.testing.assert_array_equal(value, mlm.bert.state_dict()[name].numpy(), err_msg=name)
  # pytorch_model.bin of a BertForPreTraining-era checkpoint: "bert." prefix, LayerNorm.gamma/beta,
  # heads and the position_ids buffer
  legacy = {
    "bert."
    + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
      "LayerNorm.bias", "LayerNorm.beta"
    ): torch.from_numpy(v)
    for k, v in trunk.items()
  }
  legacy["bert.embeddings.position_ids"] = torch.arange(512)[None]
  legacy["cls.predictions.bias"] = torch.zeros(64)
  legacy["cls.seq_relationship.weight"] = torch.zeros(2, 32)
  (tmp_path / "legacy").mkdir()
  torch.save(legacy, tmp_path / "legacy" / "pytorch_model.bin")
  (tmp_path / "legacy" / "config.json").write_text((folder / "config.json").read_text())
  legacy_config, legacy_params = hf_bert.load(tmp_path / "legacy")
  assert legacy_config == config
  jax.tree_util.tree_map(np.testing.assert_array_equal, legacy_params, params)


def test_bad_inputs_one_error_line_nothing_written(tiny, tmp_path, capsys):
  _, folder = tiny

  def copy(name, **config_changes):
    src = tmp_path / name
    src.mkdir()
    for f in folder.iterdir():
      src.joinpath(f.name).write_bytes(f.read_bytes())
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, **config_changes}))
    return src

  cases = [
    (
      copy("gpt2", model_type="gpt2", architectures=["GPT2Model"]),
      None,
      ("config.json", "'gpt2'", "only BERT"),
    ),
    (copy("act", hidden_act="relu"), None, ("hidden_act", "relu")),
    (copy("truncated"), None, ("model.safetensors", "not a readable safetensors file")),
    (folder, 4, ("num_layers: 4 exceeds the 3 layers",)),
  ]
  data = (tmp_path / "truncated" / "model.safetensors").read_bytes()
  (tmp_path / "truncated" / "model.safetensors").write_bytes(data[: len(data) // 2])
  for i, (source, num_layers, needles) in enumerate(cases):
    with pytest.raises(UserError) as e:
      hf_bert.convert(source, tmp_path / f"out{i}", num_layers=num_layers)
    assert_one_line(e, *needles)
    assert not (tmp_path / f"out{i}").exists()
  with pytest.raises(SystemExit) as exit_info:  # the same through the command line
    convert_main(["bert", f"--source={folder}", f"--output={tmp_path / 'cli'}", "--num-layers=9"])
  err = capsys.readouterr().err
  assert exit_info.value.code == 2 and err.count("\n") == 1 and "num_layers: 9 exceeds" in err
  assert not (tmp_path / "cli").exists()
  assert not any(".tmp-" in p.name for p in tmp_path.iterdir())


def test_lora_identity_at_init_gradients_reach_adapters(tiny, rng):
  _, folder = tiny
  config, params = hf_bert.load(folder, num_layers=2)
  lcfg = config.replace(lora_rank=2, lora_alpha=4.0)
  x = rng.normal(size=(2, 17, 32)).astype(np.float32)
  mask = _mask(rng, 2, 17)
  shapes = nn.unbox(jax.eval_shape(Bert(lcfg).init, jax.random.PRNGKey(0), jnp.asarray(x))["params"])
  fresh = jax.tree_util.tree_map_with_path(  # adapters as LoRADense initialises them: A random, B = 0
    lambda path, s: (
      rng.uniform(-0.2, 0.2, s.shape).astype(np.float32)
      if path[-1].key == "lora_a"
      else np.zeros(s.shape, np.float32)
    ),
    shapes,
  )
  lora = overlay(fresh, params)  # pretrained weights, fresh adapters
  adapted = [
    jax.tree_util.keystr(p[:-1])
    for p, _ in jax.tree_util.tree_leaves_with_path(lora)
    if p[-1].key == "lora_a"
  ]
  assert len(adapted) == 2 * 6  # query, key, value, attention output, intermediate, output per layer
  np.testing.assert_allclose(_ours(lcfg, lora, x, mask=mask), _ours(config, params, x, mask=mask), atol=1e-6)

  @jax.jit
  def grads(p):
    return jax.grad(lambda q: jnp.sum(jnp.sin(Bert(lcfg).apply({"params": q}, x, attention_mask=mask))))(p)

  def norms(g, leaf):
    return [
      float(jnp.abs(v).sum()) for path, v in jax.tree_util.tree_leaves_with_path(g) if path[-1].key == leaf
    ]

  g = grads(lora)
  assert min(norms(g, "lora_b")) > 0 and max(norms(g, "lora_a")) == 0  # B = 0 blocks A's gradient
  trained = jax.tree_util.tree_map_with_path(
    lambda path, v: (
      0.1 * jax.random.normal(jax.random.PRNGKey(1), v.shape) if path[-1].key == "lora_b" else v
    ),
    lora,
  )
  assert min(norms(grads(trained), "lora_a")) > 0
  merged = merge_lora(trained, alpha=4.0)  # the adapted model is the plain one with merged kernels
  diff = np.abs(_ours(lcfg, trained, x, mask=mask) - _ours(config, merged, x, mask=mask)).max()
  assert diff <= 1e-5, diff


def test_bfloat16_compute_close_to_float32(tiny, rng):
  _, folder = tiny
  config, params = hf_bert.load(folder, num_layers=1)
  x = rng.normal(size=(1, 17, 32)).astype(np.float32)
  out16 = jax.jit(Bert(config.replace(dtype="bfloat16")).apply)({"params": params}, jnp.asarray(x))
  assert out16.dtype == jnp.bfloat16
  ref = _ours(config, params, x)
  err = np.abs(np.asarray(out16, np.float32) - ref).max() / np.abs(ref).max()
  assert err < 5e-2, err


def test_logical_axes_on_every_parameter():
  boxed = jax.eval_shape(
    lambda: Bert(BertConfig(**SHAPE, lora_rank=2)).init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 32)))
  )["params"]
  specs = nn.get_partition_spec(boxed)
  is_spec = lambda s: isinstance(s, jax.sharding.PartitionSpec)  # noqa: E731
  known = {name for name, _ in DEFAULT_RULES}
  for path, spec in jax.tree_util.tree_leaves_with_path(specs, is_leaf=is_spec):
    assert len(spec) and set(spec) - {None} <= known, (path, spec)
  P = jax.sharding.PartitionSpec
  assert specs["embeddings"]["word_embeddings"]["embedding"] == P("vocab", "embed")
  layer = specs["layer_0"]
  assert layer["attention"]["self"]["query"]["kernel"] == P("embed", "heads")
  assert layer["attention"]["output"]["dense"]["kernel"] == P("heads", "embed")
  assert layer["intermediate"]["dense"]["kernel"] == P("embed", "mlp")
  assert layer["output"]["dense"]["kernel"] == P("mlp", "embed")


@pytest.mark.parametrize("seq", [17, 512])
def test_parity_all_minilm_l6_v2(minilm, rng, seq):
  model = transformers.BertModel.from_pretrained(minilm).eval()
  config, params = hf_bert.load(minilm)
  assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (6, 384, 12)
  ids = rng.integers(1000, config.vocab_size, size=(2, seq))
  x = 0.05 * rng.normal(size=(2, seq, 384)).astype(np.float32)  # the word table's scale
  mask = _mask(rng, 2, seq)
  for kind, inputs in (("ids", dict(ids=ids)), ("embeds", dict(x=x))):
    for m in (None, mask):
      diff = np.abs(_ours(config, params, mask=m, **inputs) - _reference(model, mask=m, **inputs)).max()
      assert diff <= 1e-4, (kind, m is not None, diff)
