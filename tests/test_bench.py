"""Benchmark harness correctness (never timings): FLOP counting, time summaries, the CLI's JSON
line, and the PyTorch references' forward passes against stjax with copied weights."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stjax import bench
from stjax.models.gpt2 import GPT2Block, GPT2Config


@pytest.mark.parametrize("batch,seq,width,heads", [(2, 64, 128, 4), (3, 32, 256, 8)])
def test_gpt2_block_flops_match_hand_count(batch, seq, width, heads):
  """XLA's cost analysis of one GPT-2 block forward = the matmul FLOPs counted by hand.

  Hand count (multiply-add = 2 FLOPs), tokens T = batch * seq, width d, MLP width 4d:
    c_attn 2*T*d*3d + q.k^T 2*T*seq*d + probs.v 2*T*seq*d + c_proj 2*T*d*d
    + c_fc 2*T*d*4d + mlp c_proj 2*T*4d*d  =  24*T*d^2 + 4*T*seq*d.
  XLA also counts elementwise work (LayerNorm, softmax, GELU, residual adds): a few percent at
  these widths, so the ratio must lie in [1, 1.04].
  """
  cfg = GPT2Config(n_embd=width, n_head=heads, n_layer=1)
  block = GPT2Block(cfg)
  x = jax.random.normal(jax.random.key(0), (batch, seq, width))
  variables = block.init(jax.random.key(1), x, deterministic=True)
  fwd = jax.jit(lambda v, x: block.apply(v, x, deterministic=True)[0])
  compiled = bench.compile_step(fwd, variables, x)
  tokens = batch * seq
  hand = 24 * tokens * width**2 + 4 * tokens * seq * width
  assert compiled.flops_per_device is not None
  ratio = compiled.flops_per_device / hand
  assert 1.0 <= ratio <= 1.04, (compiled.flops_per_device, hand)
  assert compiled.compile_time_s > 0
  assert compiled.memory_bytes is not None and compiled.memory_bytes > x.size * 4


def test_time_calls_threads_carry_and_times_every_step():
  step = jax.jit(lambda c, x: (c + x, c.sum()))
  times, carry = bench.time_calls(step, jnp.zeros(4), [jnp.ones(4), 2 * jnp.ones(4)], steps=5, warmup=2)
  assert len(times) == 5 and all(t > 0 and math.isfinite(t) for t in times)
  # 7 calls alternating +1, +2: 1+2+1+2+1+2+1 = 10.
  np.testing.assert_allclose(np.asarray(carry), 10.0)
  s = bench.summarize_times([3.0, 1.0, 2.0, 4.0, 5.0])
  assert s["step_time_s"] == 3.0 and s["step_time_p10_s"] < s["step_time_s"] < s["step_time_p90_s"]


def test_peak_flops_table():
  class Dev:
    device_kind = "NVIDIA H100 80GB HBM3"

  class Pcie:
    device_kind = "NVIDIA H100 PCIe"

  class Cpu:
    device_kind = "cpu"

  assert bench.peak_flops_per_device(Dev(), "bfloat16") == 989e12
  assert bench.peak_flops_per_device(Pcie(), "bfloat16") == 756e12
  assert bench.peak_flops_per_device(Cpu(), "float32") is None
