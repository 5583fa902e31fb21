"""Timing device-synchronised calls: the clock rules every stjax benchmark shares.

`time_calls` times a chain of calls threading a carry (so donated buffers are never reused),
`interleaved_times` takes one call of each runner per round so machine load hits all alike, and
`summarize_times` reports the median and 10th / 90th percentiles. Every timed call is synchronised
(`jax.block_until_ready`) before the clock stops; warm-up calls come first, untimed.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import numpy as np

from stjax.errors import UserError


def time_calls(
  call: Callable[[Any, Any], Any], carry: Any, inputs: list[Any], steps: int, warmup: int
) -> tuple[list[float], Any]:
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


def interleaved_times(
  runners: dict[str, Callable[[int], Any]], num_inputs: int, steps: int, warmup: int
) -> dict[str, list[float]]:
  """Times `steps` rounds in which every runner takes one call on the same input index, so a change
  of machine load hits all of them alike (ratios from one run are what to compare on a shared VM).

  `runners[name](i)` must run one call on input i (of `num_inputs`) and synchronise it (e.g.
  `jax.block_until_ready`) before returning. `warmup` untimed rounds come first.

  Returns: {name: per-call seconds of the `steps` timed rounds}.
  """
  if steps < 1:
    raise UserError(f"--steps: must be >= 1, got {steps}")
  for i in range(warmup):
    for run in runners.values():
      run(i % num_inputs)
  times = {name: [] for name in runners}
  for i in range(steps):
    for name, run in runners.items():
      start = time.perf_counter()
      run((warmup + i) % num_inputs)
      times[name].append(time.perf_counter() - start)
  return times


def summarize_times(times: list[float]) -> dict[str, float | None]:
  """Median and 10th/90th percentiles of step times (seconds); None each when nothing was timed."""
  if not times:
    return {"step_time_s": None, "step_time_p10_s": None, "step_time_p90_s": None}
  arr = np.asarray(times, np.float64)
  return {
    "step_time_s": float(np.median(arr)),
    "step_time_p10_s": float(np.percentile(arr, 10)),
    "step_time_p90_s": float(np.percentile(arr, 90)),
  }
