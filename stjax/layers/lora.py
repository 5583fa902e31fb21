"""Dense layers in Hugging Face Conv1D layout with optional LoRA adapters.

`LoRADense` holds `kernel` [in, out] and `bias` [out] (the layout of HF GPT-2's Conv1D, so
pretrained tensors load without a transpose). With `rank > 0` it adds `lora_a` [in, rank] and
`lora_b` [rank, out] beside the kernel and computes

    y = x @ kernel + bias + (alpha / rank) * (x @ lora_a) @ lora_b

with `lora_a` kaiming-uniform-like (U(-1/sqrt(in), 1/sqrt(in)), as loralib) and `lora_b` zero, so a
fresh adapter leaves the pretrained function unchanged. Freezing the base kernel is the
optimizer's job (`stjax.train.optim.trainable_mask(params, "lora")`), not the module's.
`merge_lora` folds trained adapters into the kernels for inference.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Projections that get adapters by default: every Dense of a GPT-2 block.
DEFAULT_LORA_TARGETS = r"attn/c_attn|attn/c_proj|mlp/c_fc|mlp/c_proj"


def lora_a_init(key: jax.Array, shape: tuple[int, int], dtype: Any = jnp.float32) -> jax.Array:
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for A [in, rank] (torch kaiming_uniform_(a=sqrt(5)))."""
  bound = 1.0 / np.sqrt(shape[0])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def lora_applies(path: tuple[str, ...] | str, targets: str) -> bool:
  """True when the module path ('h_0/attn/c_attn', any prefix allowed) matches the regex."""
  if not isinstance(path, str):
    path = "/".join(path)
  return bool(targets) and re.search(targets, path) is not None


class LoRADense(nn.Module):
  """x [..., in] -> [..., features] with kernel [in, features] and optional LoRA adapters.

  Attributes:
    features: output width.
    kernel_axes: logical axis names of the kernel, e.g. ("embed", "mlp").
    rank: LoRA rank; 0 = no adapters (a plain Conv1D/Dense).
    alpha: LoRA alpha; the adapter is scaled by alpha / rank.
    use_bias: False drops `bias` (Llama projections have none).
    dtype: compute dtype (params stay `param_dtype`).
  """

  features: int
  kernel_axes: tuple[str | None, str | None]
  rank: int = 0
  alpha: float = 1.0
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.normal(0.02)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d_in = x.shape[-1]
    in_axis, out_axis = self.kernel_axes
    kernel = self.param(
      "kernel",
      nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
      (d_in, self.features),
      self.param_dtype,
    )
    x = x.astype(self.dtype)
    y = jnp.einsum("...i,io->...o", x, kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param(
        "bias",
        nn.with_logical_partitioning(nn.initializers.zeros, (out_axis,)),
        (self.features,),
        self.param_dtype,
      )
      y = y + bias.astype(self.dtype)
    if self.rank > 0:
      a = self.param(
        "lora_a",
        nn.with_logical_partitioning(lora_a_init, (in_axis, None)),
        (d_in, self.rank),
        self.param_dtype,
      )
      b = self.param(
        "lora_b",
        nn.with_logical_partitioning(nn.initializers.zeros, (None, out_axis)),
        (self.rank, self.features),
        self.param_dtype,
      )
      low = jnp.einsum("...i,ir->...r", x, a.astype(self.dtype))
      y = y + (self.alpha / self.rank) * jnp.einsum("...r,ro->...o", low, b.astype(self.dtype))
    return y


def merge_lora(params: Any, alpha: float, keep_adapters: bool = False) -> Any:
  """Folds every (lora_a, lora_b) pair into its sibling kernel: kernel + alpha/rank * A @ B.

  Args:
    params: a (nested dict) param tree, e.g. from a GPT2 built with `lora_rank > 0`.
    alpha: the LoRA alpha the model was trained with (rank is read from lora_a's shape).
    keep_adapters: False (default) drops lora_a/lora_b, so the result is applied by the same model
      built with `lora_rank=0`; True keeps them with lora_b zeroed (same model config).

  Returns:
    A new tree; the input is not modified.
  """
  if not isinstance(params, dict) and not hasattr(params, "items"):
    return params
  out = {k: merge_lora(v, alpha, keep_adapters) for k, v in params.items()}
  if "lora_a" in out and "lora_b" in out and "kernel" in out:
    a, b, kernel = out["lora_a"], out["lora_b"], out["kernel"]
    delta = (alpha / a.shape[-1]) * (jnp.asarray(a, jnp.float32) @ jnp.asarray(b, jnp.float32))
    out["kernel"] = (jnp.asarray(kernel, jnp.float32) + delta).astype(kernel.dtype)
    if keep_adapters:
      out["lora_b"] = jnp.zeros_like(b)
    else:
      del out["lora_a"], out["lora_b"]
  return out
