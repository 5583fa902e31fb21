"""Kernel choices (`config.kernels`): `auto` is resolved in one place; the program an accelerator
runs (auto resolved as for a GPU) is traced and trained here on CPU and gives the CPU choices'
losses; every explicit choice of every kernel gives the same training losses."""

import dataclasses

import jax
import numpy as np
import pytest
from helpers import TINY_ST_LINK, load_config

from stjax.data.windows import TRAIN_KEYS
from stjax.errors import UserError
from stjax.kernels import Kernels, default_kernel_config, resolve_kernels
from stjax.models import sth_sepnet
from stjax.train.config import base_config
from stjax.train.experiment import build_experiment
from stjax.train.step import compile_train_step


def test_auto_resolves_per_backend_and_mesh():
  auto = default_kernel_config()
  assert resolve_kernels(auto, backend="cpu", num_devices=1) == Kernels("xla", "min_rows", "ones_matmul")
  assert resolve_kernels(auto, backend="cpu", num_devices=8) == Kernels("xla", "dense", "ones_matmul")
  for accelerator in ("gpu", "tpu"):
    assert resolve_kernels(auto, backend=accelerator, num_devices=1) == Kernels("xla", "dense", "xla")
  explicit = {"attention": "xla_dense", "experts": "grouped", "leading_sum": "xla"}
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
  ):
    np.testing.assert_allclose(_losses(config, other)[0], cpu_losses, rtol=2e-5)
