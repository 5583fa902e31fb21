"""Kernel choices (`config.kernels`): `auto` is resolved in one place; the program an accelerator
runs (auto resolved as for a GPU) is traced and trained here on CPU and gives the CPU choices'
losses; every explicit choice of every kernel gives the same training losses. Every attention
kernel that runs on CPU (xla dense, xla blockwise, splash in Pallas interpret mode) equals a
float64 NumPy reference in values and gradients, full and causal, with and without GQA; cuDNN
runs on a GPU only."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY_ST_LINK, load_config
from test_attention import reference, reference_vjp

from stjax.data.windows import TRAIN_KEYS
from stjax.errors import UserError
from stjax.kernels import Kernels, default_kernel_config, resolve_kernels
from stjax.layers import attention
from stjax.models import sth_sepnet
from stjax.train.config import base_config
from stjax.train.experiment import build_experiment
from stjax.train.step import compile_train_step


def test_auto_resolves_per_backend_and_mesh():
  auto = default_kernel_config()
  cpu = "interpret"
  assert resolve_kernels(auto, backend="cpu", num_devices=1) == Kernels("xla", "min_rows", "ones_matmul", cpu)
  assert resolve_kernels(auto, backend="cpu", num_devices=8) == Kernels("xla", "dense", "ones_matmul", cpu)
  assert resolve_kernels(auto, backend="gpu", num_devices=1) == Kernels("xla", "dense", "xla", cpu)
  bf16 = resolve_kernels(auto, backend="gpu", num_devices=1, dtype="bfloat16")
  assert bf16 == Kernels("cudnn", "dense", "xla", cpu)
  assert resolve_kernels(auto, backend="tpu", num_devices=8) == Kernels("splash", "dense", "xla", "mosaic")
  for backend in ("gpu", "tpu"):  # attention dropout: no fused kernel has it
    got = resolve_kernels(auto, backend=backend, num_devices=1, attention_dropout=0.1, dtype="bfloat16")
    assert got.attention == "xla"
  explicit = {"attention": "xla_dense", "experts": "grouped", "leading_sum": "xla", "pallas": "interpret"}
  assert resolve_kernels(explicit, backend="gpu", num_devices=4) == Kernels(**explicit)
  with pytest.raises(UserError, match="config.kernels.experts: 'sparse' is not one of auto, dense"):
    resolve_kernels({"experts": "sparse"}, backend="cpu", num_devices=1)
  with pytest.raises(UserError, match="config.kernels: unknown field"):
    resolve_kernels({"attn": "xla"}, backend="cpu", num_devices=1)


def _tiny_sth_sepnet():
  c = base_config(sth_sepnet.default_config())
  c.data.name, c.data.protocol = "synthetic", "sthsepnet"
  c.data.synthetic.num_nodes, c.data.synthetic.num_steps = 6, 600
  c.data.input_len, c.data.output_len = 24, 6
  c.model.update(
    dict(
      pretrained="",
      llm_layers=1,
      n_embd=16,
      n_head=2,
      vocab_size=32,
      n_positions=16,
      d_model=16,
      d_ff=8,
      n_heads=2,
      num_prototypes=8,
      patch_len=8,
      stride=4,
      num_layers=1,
      residual_channels=8,
      conv_channels=8,
      skip_channels=8,
      end_channels=8,
      node_dim=4,
      top_k=3,
      lora_rank=2,
      lora_alpha=2.0,
    )
  )
  c.train.batch_size, c.train.progress_bar = 8, False
  c.optim.name, c.optim.learning_rate = "adamw", 3e-3
  return c


def _losses(config, kernels: dict, steps: int = 3) -> tuple[list[float], dict]:
  config = config.copy_and_resolve_references()
  config.kernels.update(kernels)
  exp = build_experiment(config)
  step = compile_train_step(exp)
  train = exp.bundle.splits["train"]
  losses = []
  with exp.context():
    state = exp.init_state()
    for i in range(steps):
      host = train.batch(np.arange(i * 8, (i + 1) * 8))
      batch = {k: jax.device_put(host[k]) for k in TRAIN_KEYS}
      state, m = step(state, batch)
      losses.append(float(m["loss"]))
  return losses, dict(exp.config.kernels)


@pytest.mark.parametrize(
  "make_config", [lambda: load_config(TINY_ST_LINK), _tiny_sth_sepnet], ids=["st_link", "sth_sepnet"]
)
def test_accelerator_program_trains_like_the_cpu_program(make_config):
  config = make_config()  # on the 8 simulated CPU devices of the tests
  gpu = dataclasses.asdict(resolve_kernels(default_kernel_config(), backend="gpu", num_devices=8))
  cpu_losses, cpu_choice = _losses(config, {})
  gpu_losses, gpu_choice = _losses(config, gpu)
  assert cpu_choice["leading_sum"] == "ones_matmul" and gpu_choice == gpu
  np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=2e-5)
  for other in (
    {"attention": "xla_dense", "experts": "grouped"},
    {"experts": "min_rows", "leading_sum": "xla"},
    {"experts": "ragged"},  # per device in shard_map over the data axis
  ):
    np.testing.assert_allclose(_losses(config, other)[0], cpu_losses, rtol=2e-5)


def test_fused_kernels_the_run_cannot_use_are_refused_at_resolve_time():
  with pytest.raises(
    UserError, match="splash has no attention dropout, but config.model.attention_dropout is 0.1"
  ):
    resolve_kernels({"attention": "splash"}, backend="tpu", num_devices=1, attention_dropout=0.1)
  with pytest.raises(UserError, match="cudnn runs on GPUs only; this mesh is cpu"):
    resolve_kernels({"attention": "cudnn"}, backend="cpu", num_devices=1, dtype="bfloat16")
  with pytest.raises(UserError, match="cudnn needs a bf16 model"):
    resolve_kernels({"attention": "cudnn"}, backend="gpu", num_devices=1)
  with pytest.raises(UserError, match="config.kernels.pallas: mosaic compiles Pallas kernels for TPU only"):
    resolve_kernels({"attention": "splash", "pallas": "mosaic"}, backend="cpu", num_devices=1)


def _qkv(rng, heads, kv_heads, length=20, d=8):
  return [
    jnp.asarray(rng.standard_normal(s).astype(np.float32))
    for s in (
      (2, length, heads, d),
      (2, length, kv_heads, d),
      (2, length, kv_heads, d),
      (2, length, heads, d),
    )
  ]


KERNEL_CASES = {  # attend's arguments per implementation that runs on CPU
  "xla_dense": dict(kernel="xla_dense"),
  "xla_blockwise": dict(kernel="xla", key_block=8),  # 3 blocks of 8 keys for 20 keys (padding)
  "splash": dict(kernel="splash", pallas_interpret=True),  # 20 tokens padded to one 128 block
}


@pytest.mark.parametrize(
  "name,causal,kv_heads",
  [(n, c, h) for n in ("xla_dense", "xla_blockwise") for c in (False, True) for h in (4, 2)]
  + [("splash", False, 4), ("splash", True, 2)],  # interpret mode is slow: the two opposite corners
)
def test_attention_kernels_match_float64_reference(rng, name, causal, kv_heads):
  """Outputs and the gradients of sum(out * cot) w.r.t. q, k, v, for 4 query heads over 4 (MHA) or
  2 (GQA) K/V heads, full and causal masks."""
  q, k, v, cot = _qkv(rng, 4, kv_heads)
  run = lambda q, k, v: attention.attend(q, k, v, causal=causal, **KERNEL_CASES[name])  # noqa: E731
  out, vjp = jax.vjp(run, q, k, v)
  np.testing.assert_allclose(np.asarray(out), reference(q, k, v, causal=causal), atol=3e-6, rtol=1e-5)
  for got, want in zip(vjp(cot), reference_vjp(q, k, v, cot, causal=causal)):
    np.testing.assert_allclose(np.asarray(got), want, atol=3e-5, rtol=1e-4)


def test_splash_refuses_what_it_cannot_serve(rng):
  q, k, v, _ = _qkv(rng, 4, 4)
  with pytest.raises(ValueError, match="splash kernel takes no mask"):
    attention.attend(q, k, v, causal=False, mask=jnp.ones((1, 1, 20, 20), bool), kernel="splash")
  with pytest.raises(ValueError, match="splash kernel has no attention dropout"):
    attention.attend(
      q,
      k,
      v,
      causal=False,
      dropout_rate=0.1,
      deterministic=False,
      dropout_rng=jax.random.key(0),
      kernel="splash",
    )


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN flash attention needs an NVIDIA GPU")
@pytest.mark.parametrize("causal,kv_heads", [(False, 4), (True, 2)])
def test_cudnn_matches_float64_reference(rng, causal, kv_heads):
  q, k, v, cot = (x.astype(jnp.bfloat16) for x in _qkv(rng, 4, kv_heads, length=64, d=64))
  run = lambda q, k, v: attention.attend(q, k, v, causal=causal, kernel="cudnn")  # noqa: E731
  out, vjp = jax.vjp(run, q, k, v)
  np.testing.assert_allclose(
    np.asarray(out, np.float32), reference(q, k, v, causal=causal), atol=3e-2, rtol=3e-2
  )
  for got, want in zip(vjp(cot), reference_vjp(q, k, v, cot, causal=causal)):
    np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=1e-1, rtol=5e-2)


def test_splash_trains_like_xla_on_a_mesh():
  """The tiny ST-LINK on the 8 simulated CPU devices (data 8): splash runs in shard_map per device
  (Pallas interpret mode) and gives the xla kernel's training losses."""
  config = load_config(TINY_ST_LINK)
  xla_losses, _ = _losses(config, {"attention": "xla"})
  splash_losses, choice = _losses(config, {"attention": "splash"})
  assert choice["attention"] == "splash" and choice["pallas"] == "interpret"
  np.testing.assert_allclose(splash_losses, xla_losses, rtol=2e-5)


def _backbone_outputs(make, x):
  """Outputs of a backbone built with the xla and with the splash kernel, same params."""
  xla, splash = make(Kernels(attention="xla")), make(Kernels(attention="splash", pallas="interpret"))
  params = xla.init(jax.random.key(0), x)
  return np.asarray(xla.apply(params, x)), np.asarray(splash.apply(params, x))


@pytest.mark.parametrize("family", ["gpt2_causal", "llama_gqa", "bert", "st_link_se_dual"])
def test_splash_serves_every_backbone(family):
  """GPT-2 with ST-LLM's causal mask, Llama (GQA 4 heads over 2 K/V heads, causal), BERT (full, no
  padding mask) and ST-LINK's SE-Attention in dual mode (q, k rotated before the kernel, doubled
  heads): splash (Pallas interpret mode) gives the xla kernel's outputs."""
  from stjax.models.backbones.bert import Bert, BertConfig
  from stjax.models.backbones.gpt2 import GPT2, GPT2Config
  from stjax.models.backbones.llama import Llama, LlamaConfig

  x = jax.random.normal(jax.random.key(1), (2, 12, 16))
  if family == "st_link_se_dual":
    config = load_config(TINY_ST_LINK)
    config.model.se_mode, config.model.dropout = "dual", 0.0
    outs = []
    for kernels in ({"attention": "xla"}, {"attention": "splash"}):
      config.kernels.update(kernels)
      exp = build_experiment(config)
      batch = exp.bundle.splits["train"].batch(np.arange(2))
      inputs = {k: batch[k] for k in ("x", "tod", "dow") if k in batch}
      variables = exp.model.init(jax.random.key(0), inputs, train=False)
      outs.append(np.asarray(exp.model.apply(variables, inputs, train=False)[0]))
    xla_out, splash_out = outs
  else:
    make = {
      "gpt2_causal": lambda k: GPT2(
        GPT2Config(vocab_size=8, n_positions=16, n_embd=16, n_layer=2, n_head=2, kernels=k)
      ),
      "llama_gqa": lambda k: Llama(
        LlamaConfig(
          vocab_size=8,
          hidden_size=16,
          intermediate_size=32,
          num_hidden_layers=2,
          num_attention_heads=4,
          num_key_value_heads=2,
          head_dim=4,
          kernels=k,
        )
      ),
      "bert": lambda k: Bert(
        BertConfig(
          vocab_size=8,
          hidden_size=16,
          num_hidden_layers=2,
          num_attention_heads=2,
          intermediate_size=32,
          kernels=k,
        )
      ),
    }[family]
    xla_out, splash_out = _backbone_outputs(make, x)
  np.testing.assert_allclose(splash_out, xla_out, rtol=2e-5, atol=2e-6)
