"""Where a compiled train step spends its time, per model component (`python -m stjax.bench
... --profile_dir=DIR`).

Runs steps under `jax.profiler.trace` (the trace in DIR opens in TensorBoard or Perfetto), sums
the duration of every XLA op event in it, and attributes each op to the Flax module that emitted
it, read from the `op_name` metadata of the compiled HLO, e.g.

    jit(step)/transpose(jvp(STLink))/llm/h_3/mlp/mrffn/dot_general -> backward  llm/h_3/mlp
    jit(step)/jvp(STLLM)/start_conv/add                          -> forward   start_conv
    jit(step)/add  (optimizer update, loss, metrics)               -> step      (outside the model)

A second table sums the same time by HLO op kind (the instruction name without its number:
`ynn_fusion` = XNNPACK/YNNPACK dots on CPU, `dot`, `scatter`, `copy`, `*_fusion` = fused
elementwise loops). `depth` = how many module names to keep. Times are per step; shares are of
all op time (ops that run in parallel threads both count, so on several cores the sum can exceed
the wall time).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
from typing import Any, Callable

import jax

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?op_name=\"([^\"]*)\"")
_PRIMITIVE_WRAPPERS = re.compile(r"^(jit|pjit|remat|checkpoint|vmap|custom_jvp_call|custom_vjp_call)\(")


def op_names(hlo_text: str) -> dict[str, str]:
  """{HLO instruction name: its op_name metadata} for every instruction that has one."""
  names = {}
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.match(line)
    if m:
      names[m.group(1)] = m.group(2)
  return names


def component(op_name: str, depth: int) -> tuple[str, str]:
  """op_name metadata -> (pass, module path of at most `depth` names).

  pass: "forward" (jvp(...)), "backward" (transpose(jvp(...))) or "step" (outside the model).
  """
  parts = op_name.split("/")
  direction, path = "step", []
  for i, part in enumerate(parts):
    if part.startswith("transpose(jvp("):
      direction, path = "backward", parts[i + 1 :]
      break
    if part.startswith("jvp("):
      direction, path = "forward", parts[i + 1 :]
      break
  modules = [p for p in path[:-1] if not _PRIMITIVE_WRAPPERS.match(p)]  # the last part is the primitive
  return direction, "/".join(modules[:depth]) or "(outside modules)"


def trace_op_times(trace_dir: str) -> collections.Counter:
  """{event name: total microseconds} of the complete events in the newest Perfetto trace."""
  files = sorted(
    glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True), key=os.path.getmtime
  )
  if not files:
    raise RuntimeError(f"no Perfetto trace (*.trace.json.gz) was written under {trace_dir}")
  with gzip.open(files[-1]) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  totals: collections.Counter = collections.Counter()
  for e in events:
    if e.get("ph") == "X":
      totals[e["name"]] += float(e.get("dur", 0.0))
  return totals


def _rows(totals: collections.Counter, ops: dict, steps: int, top: int, keys: tuple[str, ...]) -> list[dict]:
  total = sum(totals.values()) or 1.0
  return [
    {**dict(zip(keys, k)), "ms_per_step": v / 1e3 / steps, "share": v / total, "ops": len(ops[k])}
    for k, v in totals.most_common(top)
  ]


def profile(
  step: Callable[[Any, Any], tuple[Any, Any]],
  state: Any,
  batches: list[Any],
  compiled: Any,
  steps: int,
  trace_dir: str,
  depth: int = 2,
  top: int = 25,
) -> tuple[dict[str, list[dict]], Any]:
  """Traces `steps` calls of `step`; returns ({"components": rows, "op_kinds": rows}, state).

  compiled: the `jax.stages.Compiled` step (its HLO names the ops). Component rows: pass,
  component, ms_per_step, share (of all attributed op time), ops (distinct HLO ops); op-kind rows:
  kind, ms_per_step, share, ops. The `top` rows of each.
  """
  hlo = compiled.as_text()
  os.makedirs(trace_dir, exist_ok=True)
  with open(os.path.join(trace_dir, "hlo.txt"), "w") as f:  # to look ops of the trace up by name
    f.write(hlo)
  names = op_names(hlo)
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for i in range(steps):
      state, _ = step(state, batches[i % len(batches)])
    jax.block_until_ready(state)
  by_component, by_kind = collections.Counter(), collections.Counter()
  ops: dict[tuple, set] = collections.defaultdict(set)
  for name, micros in trace_op_times(trace_dir).items():
    if name in names:
      kind = (name.rsplit(".", 1)[0],)
      for totals, key in ((by_component, component(names[name], depth)), (by_kind, kind)):
        totals[key] += micros
        ops[key].add(name)
  return {
    "components": _rows(by_component, ops, steps, top, ("pass", "component")),
    "op_kinds": _rows(by_kind, ops, steps, top, ("kind",)),
  }, state
