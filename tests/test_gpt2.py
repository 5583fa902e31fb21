"""GPT-2 forward pass: float64 NumPy reference, golden fixture (no torch), HF PyTorch parity of
gradients, dropout, bf16, pluggable attention / extra FFN, logical axes."""

from __future__ import annotations

import importlib.util
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stjax.convert import hf_gpt2
from stjax.errors import UserError
from stjax.models.backbones.gpt2 import GPT2, GPT2Attention, GPT2Config

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("make_gpt2_golden", FIXTURES / "make_gpt2_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

SMALL = dict(vocab_size=13, n_positions=600, n_embd=32, n_head=4, n_layer=2)


def _model_and_params(rng, **overrides):
  shape = {**SMALL, **{k: v for k, v in overrides.items() if k in SMALL}}
  cfg = GPT2Config(**shape, **{k: v for k, v in overrides.items() if k not in SMALL})
  sd = golden.random_state_dict(rng, **shape)
  return cfg, sd, hf_gpt2.from_hf_tensors(cfg, sd)


def test_golden_fixture_without_torch():
  data = np.load(FIXTURES / "gpt2_golden.npz")
  vocab, positions, embd, head, layer = (int(v) for v in data["config"])
  sd = {k[2:]: data[k] for k in data.files if k.startswith("w/")}
  for causal, use_wpe, key in ((True, True, "out_causal"), (False, False, "out_full_nowpe")):
    cfg = GPT2Config(
      vocab_size=vocab,
      n_positions=positions,
      n_embd=embd,
      n_head=head,
      n_layer=layer,
      causal=causal,
      use_wpe=use_wpe,
    )
    out = GPT2(cfg).apply({"params": hf_gpt2.from_hf_tensors(cfg, sd)}, jnp.asarray(data["inputs_embeds"]))
    np.testing.assert_allclose(np.asarray(out), data[key], atol=1e-4, rtol=0)


@pytest.mark.parametrize("causal", [True, False])
def test_long_sequence_matches_float64_reference(rng, causal):
  cfg, sd, params = _model_and_params(rng, causal=causal)
  x = rng.standard_normal((2, 520, cfg.n_embd)).astype(np.float32)
  out = np.asarray(GPT2(cfg).apply({"params": params}, jnp.asarray(x)))
  ref = golden.reference_forward(sd, x, cfg.n_layer, cfg.n_head, causal=causal)
  assert np.abs(out - ref).max() <= 1e-4
  # Causality is real: changing the last token changes only the last output (causal) or all.
  x2 = x.copy()
  x2[:, -1] += 1.0
  out2 = np.asarray(GPT2(cfg).apply({"params": params}, jnp.asarray(x2)))
  assert (np.abs(out2[:, :-1] - out[:, :-1]).max() == 0.0) == causal


def test_reference_matches_torch_and_gradients(rng):
  torch = pytest.importorskip("torch")
  import transformers

  cfg, sd, params = _model_and_params(rng)
  hf = transformers.GPT2Model(transformers.GPT2Config(**SMALL)).eval()
  hf.load_state_dict({k: torch.tensor(v) for k, v in sd.items()}, strict=False)
  x = rng.standard_normal((2, 64, cfg.n_embd)).astype(np.float32)
  w = rng.standard_normal((2, 64, cfg.n_embd)).astype(np.float32)
  xt = torch.tensor(x, requires_grad=True)
  out_t = hf(inputs_embeds=xt).last_hidden_state
  ref = golden.reference_forward(sd, x, cfg.n_layer, cfg.n_head)
  assert np.abs(out_t.detach().numpy() - ref).max() <= 1e-4  # the NumPy reference is HF's GPT-2
  (out_t * torch.tensor(w)).sum().backward()

  def loss(p, xe):
    return jnp.sum(GPT2(cfg).apply({"params": p}, xe) * w)

  gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(gx), xt.grad.numpy(), atol=1e-4, rtol=1e-4)
  grads = hf_gpt2.to_hf_tensors(cfg, jax.tree_util.tree_map(np.asarray, gp))
  torch_grads = {n: p.grad for n, p in hf.named_parameters()}
  for name, g in grads.items():
    want = torch_grads[name]
    if want is None:  # wte is unused with inputs_embeds
      assert name == "wte.weight" and np.all(g == 0)
      continue
    np.testing.assert_allclose(g, want.numpy(), atol=2e-4, rtol=1e-4, err_msg=name)


def test_input_ids_equal_embedded_inputs(rng):
  cfg, sd, params = _model_and_params(rng)
  ids = rng.integers(0, cfg.vocab_size, (2, 40))
  by_ids = GPT2(cfg).apply({"params": params}, input_ids=jnp.asarray(ids))
  by_embeds = GPT2(cfg).apply({"params": params}, jnp.asarray(sd["wte.weight"][ids]))
  np.testing.assert_array_equal(np.asarray(by_ids), np.asarray(by_embeds))


def test_dropout_is_active_in_training_only(rng):
  cfg, _, params = _model_and_params(rng, attn_pdrop=0.3, resid_pdrop=0.3, embd_pdrop=0.3)
  x = jnp.asarray(rng.standard_normal((1, 30, cfg.n_embd)).astype(np.float32))
  model = GPT2(cfg)
  det = model.apply({"params": params}, x)
  train = jax.jit(lambda key: model.apply({"params": params}, x, deterministic=False, rngs={"dropout": key}))
  a, b, c = train(jax.random.key(1)), train(jax.random.key(1)), train(jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.abs(np.asarray(a) - np.asarray(det)).max() > 1e-2
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-2


def test_bfloat16_compute_keeps_float32_params(rng):
  cfg, sd, params = _model_and_params(rng, dtype="bfloat16")
  x = rng.standard_normal((1, 128, cfg.n_embd)).astype(np.float32)
  out = GPT2(cfg).apply({"params": params}, jnp.asarray(x))
  assert out.dtype == jnp.bfloat16
  ref = golden.reference_forward(sd, x, cfg.n_layer, cfg.n_head)
  assert np.abs(np.asarray(out, np.float32) - ref).max() < 0.1
  init = nn.unbox(jax.eval_shape(GPT2(cfg).init, jax.random.key(0), jnp.asarray(x))["params"])
  assert {a.dtype for a in jax.tree_util.tree_leaves(init)} == {jnp.dtype("float32")}


class _ScaledQueries(GPT2Attention):
  """A subclass as SE-Attention would write it: only transform_qk changes."""

  def transform_qk(self, q, k, *, q_scale=1.0, **kwargs):
    return q * q_scale, k


class _ConstantFFN(nn.Module):
  @nn.compact
  def __call__(self, h, *, attn_out, deterministic):
    c = self.param("c", nn.initializers.zeros, (h.shape[-1],))
    return jnp.broadcast_to(c, h.shape) + 0.0 * attn_out, jnp.float32(1.5)


def test_pluggable_attention_and_extra_ffn(rng):
  cfg, sd, params = _model_and_params(rng)
  x = rng.standard_normal((1, 40, cfg.n_embd)).astype(np.float32)
  plain = np.asarray(GPT2(cfg).apply({"params": params}, jnp.asarray(x)))
  se = GPT2(cfg, attention_factory=lambda i: lambda: _ScaledQueries(cfg))
  assert jax.tree_util.tree_structure(
    nn.unbox(jax.eval_shape(se.init, jax.random.key(0), jnp.asarray(x))["params"])
  ) == jax.tree_util.tree_structure(params)
  np.testing.assert_array_equal(np.asarray(se.apply({"params": params}, jnp.asarray(x))), plain)
  scaled = se.apply({"params": params}, jnp.asarray(x), attention_kwargs={"q_scale": 0.0})
  sd0 = dict(sd)
  for i in range(cfg.n_layer):  # q * 0 == zero query weights and biases
    for n in ("weight", "bias"):
      t = sd0[f"h.{i}.attn.c_attn.{n}"].copy()
      t[..., : cfg.n_embd] = 0.0
      sd0[f"h.{i}.attn.c_attn.{n}"] = t
  np.testing.assert_allclose(
    np.asarray(scaled), golden.reference_forward(sd0, x, cfg.n_layer, cfg.n_head), atol=1e-4
  )
  # Extra FFN on block 1 only: its output is added to the MLP's, i.e. like a shifted c_proj bias.
  ext = GPT2(cfg, extra_ffn_factory=lambda i: (lambda: _ConstantFFN()) if i == 1 else None)
  init = nn.unbox(jax.eval_shape(ext.init, jax.random.key(0), jnp.asarray(x))["params"])
  assert "extra_ffn" in init["h_1"] and "extra_ffn" not in init["h_0"]
  p = {**params, "h_1": {**params["h_1"], "extra_ffn": {"c": np.full(cfg.n_embd, 0.25, np.float32)}}}
  out, aux = ext.apply({"params": p}, jnp.asarray(x), return_aux=True)
  assert float(aux) == 1.5
  sd1 = dict(sd)
  sd1["h.1.mlp.c_proj.bias"] = sd["h.1.mlp.c_proj.bias"] + 0.25
  np.testing.assert_allclose(
    np.asarray(out), golden.reference_forward(sd1, x, cfg.n_layer, cfg.n_head), atol=1e-4
  )


def test_logical_axes_on_every_parameter():
  cfg = GPT2Config(**SMALL, lora_rank=2)
  boxed = jax.eval_shape(GPT2(cfg).init, jax.random.key(0), jnp.zeros((1, 4, cfg.n_embd)))["params"]
  leaves = jax.tree_util.tree_leaves_with_path(boxed, is_leaf=lambda l: isinstance(l, nn.Partitioned))
  assert leaves and all(
    isinstance(l, nn.Partitioned) and len(l.names) == len(l.value.shape) for _, l in leaves
  )
  assert boxed["h_0"]["attn"]["c_attn"]["kernel"].names == ("embed", "qkv")
  assert boxed["h_0"]["mlp"]["c_fc"]["kernel"].names == ("embed", "mlp")
  assert boxed["wte"]["embedding"].names == ("vocab", "embed")
  assert boxed["wpe"]["embedding"].names == ("positions", "embed")


def test_sequence_longer_than_position_table_is_a_user_error():
  cfg = GPT2Config(**{**SMALL, "n_positions": 16})
  with pytest.raises(UserError, match="n_positions=16"):
    jax.eval_shape(GPT2(cfg).init, jax.random.key(0), jnp.zeros((1, 17, cfg.n_embd)))
