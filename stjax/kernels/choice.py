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

ATTENTION_KERNELS = ("xla", "xla_dense")


@dataclasses.dataclass(frozen=True)
class Kernels:
  """Resolved kernel choices, handed to model builders (hashable: a Flax module attribute)."""

  attention: str = "xla"  # xla: dense scores, blockwise above 64 MiB of them | xla_dense: always dense.
  experts: str = "dense"  # dense | grouped | min_rows (grouped when it computes fewer rows than dense).
  leading_sum: str = "xla"  # xla | ones_matmul: how a batch-broadcast parameter's gradient is summed.


_CHOICES = {"attention": ATTENTION_KERNELS, "experts": EXPERT_KERNELS, "leading_sum": LEADING_SUM_KERNELS}


def default_kernel_config() -> ml_collections.ConfigDict:
  """`config.kernels`: every field `auto` (resolved per backend by `resolve_kernels`) or a choice."""
  c = ml_collections.ConfigDict()
  c.attention = "auto"  # auto | xla | xla_dense (auto = xla on every backend today).
  c.experts = "auto"  # auto | dense | grouped | min_rows (auto = min_rows on one CPU device, else dense).
  c.leading_sum = "auto"  # auto | xla | ones_matmul (auto = ones_matmul on CPU, else xla).
  return c


def resolve_kernels(kernel_config, *, backend: str, num_devices: int) -> Kernels:
  """The one place `auto` becomes a choice: for `backend` ("cpu", "gpu", "tpu") and a mesh of
  `num_devices` devices. The grouped expert dispatch sorts the whole batch's (token, expert) pairs,
  which a mesh of several devices cannot split (XLA replicates it), so it is only picked on one CPU
  device. Explicit choices pass through (checked)."""
  cpu = backend == "cpu"
  auto = {
    "attention": "xla",
    "experts": "min_rows" if cpu and num_devices == 1 else "dense",
    "leading_sum": "ones_matmul" if cpu else "xla",
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
  return Kernels(**chosen)
