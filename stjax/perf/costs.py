"""What a compiled step costs: model FLOPs, device peaks, memory.

`compile_step` lowers and compiles a jitted step, timing the compile and reading XLA's cost and
memory analysis (`Compiled`); `step_flops` counts model FLOPs, re-costing a step whose attention
runs blockwise or in a fused kernel with dense scores (`dense_attention_step`), since XLA's cost
analysis sees a loop body once and nothing inside custom calls. `PEAK_FLOPS` tabulates dense peak
FLOP/s per device kind and dtype for MFU; `device_peak_memory` reads the backend's peak bytes.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterable

import jax

# Dense peak FLOP/s per device, by dtype of the matmuls. float32 on NVIDIA GPUs is TF32 on tensor
# cores (JAX's default matmul precision); on TPUs float32 matmuls run as bf16 passes (default
# precision). Sources: NVIDIA H100/H200/A100 datasheets (SXM, dense), Google Cloud TPU docs.
# Matched by substring of `device.device_kind`, first match wins (so "H100 PCIe" precedes "H100").
PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
  ("H100 PCIe", {"bfloat16": 756e12, "float32": 378e12}),
  ("H100", {"bfloat16": 989e12, "float32": 494e12}),
  ("H200", {"bfloat16": 989e12, "float32": 494e12}),
  ("A100", {"bfloat16": 312e12, "float32": 156e12}),
  ("L4", {"bfloat16": 121e12, "float32": 60e12}),
  ("TPU v4", {"bfloat16": 275e12, "float32": 275e12}),
  ("TPU v5 lite", {"bfloat16": 197e12, "float32": 197e12}),
  ("TPU v5e", {"bfloat16": 197e12, "float32": 197e12}),
  ("TPU v5p", {"bfloat16": 459e12, "float32": 459e12}),
  ("TPU v5", {"bfloat16": 459e12, "float32": 459e12}),
  ("TPU v6", {"bfloat16": 918e12, "float32": 918e12}),
)


def peak_flops_per_device(device: jax.Device, dtype: str) -> float | None:
  """The table's dense peak for this device and matmul dtype, or None (CPU, unknown kinds)."""
  kind = getattr(device, "device_kind", "")
  for key, peaks in PEAK_FLOPS:
    if key.lower() in kind.lower():
      return peaks.get(dtype)
  return None


@dataclasses.dataclass
class Compiled:
  """A compiled step and what XLA says about it."""

  fn: Callable[..., Any]
  compile_time_s: float
  flops_per_device: float | None
  memory_bytes: int | None  # compiled memory analysis: args + outputs + temps - aliased


def compile_step(jitted: Any, *args) -> Compiled:
  """Lowers and compiles `jitted` for `args`; times it; reads cost and memory analysis."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  compile_time = time.perf_counter() - start
  return Compiled(compiled, compile_time, xla_flops(compiled), compiled_memory_bytes(compiled))


def compile_train_step_for(exp: Any, *args) -> Any:
  """A fresh trace and XLA compile of the experiment's train step for `args` (arrays or
  ShapeDtypeStructs), under its mesh."""
  from stjax.train.step import compile_train_step

  with exp.context():
    return compile_train_step(exp).lower(*args).compile()


def dense_attention_step(exp: Any, *args) -> Any:
  """The experiment's train step compiled for `args` with `config.kernels.attention="xla_dense"`:
  the same model, attention through the dense score tensor (built by config, for FLOP counts)."""
  from stjax.train.experiment import build_experiment

  config = exp.config.copy_and_resolve_references()
  with config.unlocked():
    config.kernels.attention = "xla_dense"
  return compile_train_step_for(build_experiment(config), *args)


def step_flops(compiled: Any, compile_dense: Callable[[], Any]) -> float | None:
  """Model FLOPs per device of a compiled step.

  XLA's cost analysis counts a loop body once and nothing inside custom calls, so when the step
  runs the blockwise attention (a scan over key blocks; its ops carry the named scope
  `BLOCKWISE_SCOPE`) or a fused kernel (splash, cuDNN: their scopes), `compile_dense()` (the
  same step with dense-score attention, see `dense_attention_step`) is compiled only to be
  costed: the model's FLOPs, without the backward's recomputation of the probabilities (as MFU is
  usually defined).
  """
  from stjax.kernels.attention import BLOCKWISE_SCOPE
  from stjax.kernels.fused_attention import CUDNN_SCOPE, SPLASH_SCOPE

  text = compiled.as_text()
  if not any(scope in text for scope in (BLOCKWISE_SCOPE, SPLASH_SCOPE, CUDNN_SCOPE)):
    return xla_flops(compiled)
  return xla_flops(compile_dense())


def xla_flops(compiled: Any) -> float | None:
  """FLOPs of one call of a compiled computation, per device, from XLA's cost analysis."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX returned one dict per computation
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  flops = float(cost["flops"])
  return flops if flops > 0 else None


def compiled_memory_bytes(compiled: Any) -> int | None:
  """Arguments + outputs + temporaries - aliased bytes of a compiled computation, or None."""
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  total = (
    stats.argument_size_in_bytes
    + stats.output_size_in_bytes
    + stats.temp_size_in_bytes
    - stats.alias_size_in_bytes
  )
  return int(total) if total > 0 else None


def device_peak_memory(devices: Iterable[jax.Device]) -> int | None:
  """Largest `peak_bytes_in_use` over the devices, or None where the backend does not say (CPU)."""
  peaks = []
  for d in devices:
    stats = d.memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
      return None
    peaks.append(int(stats["peak_bytes_in_use"]))
  return max(peaks) if peaks else None
