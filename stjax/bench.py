"""Train-step benchmark: `python -m stjax.bench --config=CONFIG --batch=B --nodes=N --steps=S`.

Builds the configured model for N nodes on the built-in synthetic data and times exactly the
train step users run (`stjax.trainer`'s jitted step), then prints a markdown table and, as the
LAST line, one JSON object:

| key | meaning |
|---|---|
| `step_time_s` | median wall time of one train step, device-synchronised (`block_until_ready`) |
| `step_time_p10_s`, `step_time_p90_s` | 10th / 90th percentile of the timed steps |
| `compile_time_s` | lowering + XLA compilation of the train step |
| `samples_per_s`, `tokens_per_s` | batch / step time; language-model tokens per sample x samples/s |
| `flops_per_step` | XLA cost analysis of the compiled step, summed over the devices that run it |
| `mfu` | flops_per_step / step time / (devices x peak FLOP/s); null when the peak is unknown |
| `peak_memory_bytes` | `memory_stats()["peak_bytes_in_use"]` where the backend has it, else the compiled step's memory analysis (arguments + outputs + temporaries - aliased), else null |
| `data_samples_per_s` | the data pipeline alone (windowing, scaling, batching), no model |

Timing rules: `--warmup` untimed steps after compilation, then `--steps` timed steps, each
synchronised before the clock stops; batches are placed on the devices before timing so the step
time excludes host-to-device copies (the data pipeline is measured on its own).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
import time
from typing import Any, Callable, Iterable

import jax
import numpy as np

from stjax.errors import UserError

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
  total = (stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
           - stats.alias_size_in_bytes)
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


def time_calls(call: Callable[[Any, Any], Any], carry: Any, inputs: list[Any], steps: int,
               warmup: int) -> tuple[list[float], Any]:
  """Times `carry = call(carry, inputs[i % len])[0]`-style steps.

  `call(carry, x)` must return `(new_carry, outputs)`; the carry is threaded (so donated buffers
  are never reused). Every timed call is synchronised with `jax.block_until_ready` on both the
  carry and the outputs before the clock stops.

  Returns: (per-step seconds of the `steps` timed calls, final carry).
  """
  if steps < 1:
    raise UserError(f"--steps: must be >= 1, got {steps}")
  for i in range(warmup):
    carry, out = call(carry, inputs[i % len(inputs)])
    jax.block_until_ready((carry, out))
  times = []
  for i in range(steps):
    x = inputs[(warmup + i) % len(inputs)]
    start = time.perf_counter()
    carry, out = call(carry, x)
    jax.block_until_ready((carry, out))
    times.append(time.perf_counter() - start)
  return times, carry


def summarize_times(times: list[float]) -> dict[str, float]:
  """Median and 10th/90th percentiles of step times (seconds)."""
  arr = np.asarray(times, np.float64)
  return {
      "step_time_s": float(np.median(arr)),
      "step_time_p10_s": float(np.percentile(arr, 10)),
      "step_time_p90_s": float(np.percentile(arr, 90)),
  }


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
  """A markdown table of `rows` with (key, header) columns; floats get 4 significant digits."""

  def fmt(v):
    if v is None:
      return "n/a"
    if isinstance(v, float):
      if not math.isfinite(v):
        return str(v)
      return f"{v:.4g}"
    return str(v)

  lines = ["| " + " | ".join(h for _, h in columns) + " |",
           "|" + "|".join("---" for _ in columns) + "|"]
  for row in rows:
    lines.append("| " + " | ".join(fmt(row.get(k)) for k, _ in columns) + " |")
  return "\n".join(lines)
