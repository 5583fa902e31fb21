"""Pieces of ahead-of-time sizing (`python -m stjax.compile_only`): a registry dataset's stand-in,
abstract batches, model FLOPs counted without a compile, the memory levers of a config and the
batch bisection of `--max_batch`. Imported after `compile_only` has set up JAX's environment."""

from __future__ import annotations

import math

import jax

from stjax.data import registry, windows
from stjax.data.windows import TRAIN_KEYS
from stjax.errors import UserError
from stjax.train.experiment import build_experiment
from stjax.train.step import compile_train_step


def standin_data(config, nodes: int | None = None, rows: int | None = None) -> str:
  """Replaces a registry dataset by synthetic values of its shape (in place); returns a note.
  `nodes`: another node count (e.g. LargeST-California's 8600); `rows`: the largest batch the
  stand-in must hold (default the configured batch sizes)."""

  d = config.data
  if nodes is not None and nodes < 1:
    raise UserError(f"--nodes: must be >= 1, got {nodes}")
  if d.name == "synthetic":
    if nodes:
      d.synthetic.num_nodes = nodes
    return f"synthetic ({d.synthetic.num_nodes} nodes{'' if nodes else ', as configured'})"
  info = registry.get(d.name)
  num_nodes = nodes or info.nodes
  protocol = d.protocol or info.protocol
  steps_per_day = int(round(24 * 60 / info.step_minutes))
  rows = max(rows or 0, config.train.batch_size, config.train.eval_batch_size or 0)
  fresh = windows.default_data_config()
  fresh.name, fresh.protocol = "synthetic", protocol
  fresh.input_len, fresh.output_len = d.input_len, d.output_len
  fresh.synthetic.update(
    num_nodes=num_nodes,
    step_minutes=info.step_minutes,
    missing_rate=0.0,
    num_steps=2 * steps_per_day + 4 * rows + 200,
  )
  with config.unlocked():
    config.data = fresh
  size = f"{num_nodes} nodes ({info.nodes} in {info.name})" if nodes else f"{num_nodes} nodes"
  return (
    f"stand-in for {info.name}: {size}, {info.step_minutes:g}-min steps, {protocol} "
    "protocol, 1 channel (synthetic values; no file read)"
  )


def abstract_batch(exp, batch_size: int) -> dict:

  example = exp.bundle.splits["train"].batch([0])
  shardings = exp.batch_shardings
  return {
    k: jax.ShapeDtypeStruct((batch_size,) + example[k].shape[1:], example[k].dtype, sharding=shardings[k])
    for k in TRAIN_KEYS
  }


def model_flops(config, batch_size: int) -> float:
  """Model FLOPs of one global train step: the step built for ONE CPU device with dense-score
  attention, dense experts and no remat (recomputation is not model work), lowered (not compiled)
  and costed by XLA: its cost analysis counts a scan body once and nothing inside custom calls."""

  config = config.copy_and_resolve_references()
  with config.unlocked():
    for axis in ("data", "fsdp", "nodes", "tensor"):
      config.mesh[axis] = 1
    config.kernels.update(attention="xla_dense", experts="dense", leading_sum="xla")
    if "remat" in config.model:
      config.model.remat = "none"  # model FLOPs: the backward's recomputation is not counted
  exp = build_experiment(config, devices=[jax.devices("cpu")[0]])
  batch = abstract_batch(exp, batch_size)
  with exp.context():
    cost = compile_train_step(exp).lower(exp.abstract_state, batch).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]) if cost and "flops" in cost else float("nan")


def levers_of(config) -> dict:
  """The memory levers a config sets (docs/scaling.md)."""
  return {
    "compute_dtype": config.train.compute_dtype,
    "model_dtype": config.model.get("dtype", "float32"),
    "frozen_dtype": config.train.get("frozen_dtype", "float32"),
    "remat": config.model.get("remat", "none"),
  }


def largest_batch(fits, start: int, multiple: int, limit: int = 1 << 16) -> tuple[int, int | None]:
  """(largest batch b that fits, smallest tried that does not or None) over multiples of `multiple`,
  by doubling/halving from `start` then bisecting; `fits(b) -> bool` compiles. 0 if none fits."""
  start = max(multiple, start // multiple * multiple)
  lo, hi = 0, None
  b = start
  while True:  # bracket
    if fits(b):
      lo = b
      if b * 2 > limit:
        return lo, None
      b *= 2
      if hi is not None and b >= hi:
        break
    else:
      hi = b
      if lo or b == multiple:
        break
      b = max(multiple, b // 2 // multiple * multiple)
  while hi is not None and hi - lo > multiple:  # bisect
    mid = (lo + hi) // 2 // multiple * multiple
    if mid <= lo:
      break
    if fits(mid):
      lo = mid
    else:
      hi = mid
  return lo, hi


def shard_bytes(tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings."""

  return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))
