"""`config.kernels`: which implementation of each backend-sensitive operation a run uses.

Every choice computes the same mathematics; they differ in speed and memory per backend. `auto`
is resolved in exactly one place, `resolve_kernels`, when an experiment is built; the run's
config.json records the resolved values, and model code only ever sees a resolved `Kernels`.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from stjax.errors import UserError
from stjax.kernels.broadcast import LEADING_SUM_KERNELS
from stjax.kernels.experts import EXPERT_KERNELS

ATTENTION_KERNELS = ("xla", "xla_dense", "cudnn", "splash")
PALLAS_MODES = ("mosaic", "interpret")


@dataclasses.dataclass(frozen=True)
class Kernels:
  """Resolved kernel choices, handed to model builders (hashable: a Flax module attribute)."""

  attention: str = "xla"  # xla: dense scores, blockwise above 64 MiB of them | xla_dense: always dense |
  # cudnn: GPU flash attention (bf16) | splash: TPU Pallas splash attention (stjax/kernels/fused_attention.py).
  experts: str = "dense"  # dense | grouped | min_rows (grouped when it computes fewer rows than dense) |
  # ragged (jax.lax.ragged_dot over expert-sorted rows).
  leading_sum: str = "xla"  # xla | ones_matmul: how a batch-broadcast parameter's gradient is summed.
  pallas: str = "mosaic"  # how Pallas kernels (splash) run: mosaic (compiled for TPU) | interpret.


_CHOICES = {
  "attention": ATTENTION_KERNELS,
  "experts": EXPERT_KERNELS,
  "leading_sum": LEADING_SUM_KERNELS,
  "pallas": PALLAS_MODES,
}


def default_kernel_config() -> ml_collections.ConfigDict:
  """`config.kernels`: every field `auto` (resolved per backend by `resolve_kernels`) or a choice."""
  c = ml_collections.ConfigDict()
  c.attention = "auto"  # auto | xla | xla_dense | cudnn | splash (auto: splash on TPU, cudnn on GPU with a
  # bf16 model, where the model has no attention dropout; else xla).
  c.experts = (
    "auto"  # auto | dense | grouped | min_rows | ragged (auto = min_rows on one CPU device, else dense).
  )
  c.leading_sum = "auto"  # auto | xla | ones_matmul (auto = ones_matmul on CPU, else xla).
  c.pallas = "auto"  # auto | mosaic | interpret (auto = mosaic on TPU, interpret elsewhere: tests on CPU).
  return c


def resolve_kernels(
  kernel_config, *, backend: str, num_devices: int, attention_dropout: float = 0.0, dtype: str = "float32"
) -> Kernels:
  """The one place `auto` becomes a choice: for `backend` ("cpu", "gpu", "tpu"), a mesh of
  `num_devices` devices and the model's attention dropout and LLM compute `dtype` (neither fused
  kernel has attention dropout; cuDNN needs bf16). The grouped expert dispatch sorts the whole
  batch's (token, expert) pairs, which a mesh of several devices cannot split (XLA replicates it),
  so it is only picked on one CPU device. Explicit choices pass through, checked: a fused kernel
  the run cannot use is a UserError here, never a silent fallback."""
  cpu = backend == "cpu"
  fused_ok = attention_dropout == 0.0
  attention = "xla"
  if backend == "tpu" and fused_ok:
    attention = "splash"
  elif backend == "gpu" and fused_ok and dtype == "bfloat16":
    attention = "cudnn"
  auto = {
    "attention": attention,
    "experts": "min_rows" if cpu and num_devices == 1 else "dense",
    "leading_sum": "ones_matmul" if cpu else "xla",
    "pallas": "mosaic" if backend == "tpu" else "interpret",
  }
  given = dict(kernel_config or {})
  unknown = sorted(set(given) - set(_CHOICES))
  if unknown:
    raise UserError(f"config.kernels: unknown field(s) {', '.join(unknown)}; known: {', '.join(_CHOICES)}")
  chosen = {}
  for field, allowed in _CHOICES.items():
    value = given.get(field, "auto")
    if value != "auto" and value not in allowed:
      raise UserError(f"config.kernels.{field}: {value!r} is not one of auto, {', '.join(allowed)}")
    chosen[field] = auto[field] if value == "auto" else value
  _check_attention(chosen, backend, attention_dropout, dtype)
  return Kernels(**chosen)


def _check_attention(chosen: dict, backend: str, attention_dropout: float, dtype: str) -> None:
  kernel = chosen["attention"]
  if kernel in ("cudnn", "splash") and attention_dropout:
    raise UserError(
      f"config.kernels.attention: {kernel} has no attention dropout, but config.model.attention_dropout "
      f"is {attention_dropout}; set it to 0 or use xla"
    )
  if kernel == "cudnn" and backend != "gpu":
    raise UserError(f"config.kernels.attention: cudnn runs on GPUs only; this mesh is {backend}")
  if kernel == "cudnn" and dtype not in ("bfloat16", "float16"):
    raise UserError(
      f"config.kernels.attention: cudnn needs a bf16 model (config.model.dtype=bfloat16), got {dtype}"
    )
  if kernel == "splash" and chosen["pallas"] == "mosaic" and backend != "tpu":
    raise UserError(
      f"config.kernels.pallas: mosaic compiles Pallas kernels for TPU only; this mesh is {backend} (use interpret)"
    )
