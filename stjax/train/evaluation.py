"""Evaluation: jitted eval steps and streaming metrics of a state on one split."""

from __future__ import annotations

import math

import jax
import numpy as np

from stjax import metrics, sharding
from stjax.data.pipeline import eval_batches
from stjax.data.windows import EVAL_KEYS, MODEL_INPUT_KEYS
from stjax.train.experiment import Experiment
from stjax.train.state import TrainState
from stjax.train.step import make_predict_fn


def compile_predict(exp: Experiment, compute_dtype: str = "float32"):
  """Jitted eval forward: (state, batch) -> predictions in original units, replicated."""
  fn = make_predict_fn(exp.model, exp.bundle.target_scaler, compute_dtype, exp.bundle.nonnegative)
  in_batch = {k: exp.batch_shardings[k] for k in MODEL_INPUT_KEYS}
  return jax.jit(
    fn, in_shardings=(exp.state_shardings, in_batch), out_shardings=sharding.replicated(exp.mesh)
  )


def compile_eval_step(exp: Experiment, keep_nodes: tuple[int, ...] = ()):
  """Jitted (state, batch) -> metric sums of the batch (and first-horizon traces of `keep_nodes`),
  reduced over the global batch on device, so every host gets the same numbers."""
  predict = make_predict_fn(
    exp.model, exp.bundle.target_scaler, exp.config.train.compute_dtype, exp.bundle.nonnegative
  )
  null_rule, nodes = exp.bundle.protocol.null_rule, list(keep_nodes)

  def step(state, batch):
    pred = predict(state, batch)
    out = {"sums": metrics.metric_sums(pred, batch["y"], batch["valid"], null_rule=null_rule)}
    if nodes:
      out["trace"] = {
        "pred": pred[:, 0, nodes, 0],
        "true": batch["y"][:, 0, nodes, 0],
        "index": batch["index"],
        "valid": batch["valid"],
      }
    return out

  in_batch = {k: exp.batch_shardings[k] for k in EVAL_KEYS}
  return jax.jit(
    step, in_shardings=(exp.state_shardings, in_batch), out_shardings=sharding.replicated(exp.mesh)
  )


def eval_batch_size(exp: Experiment) -> int:
  """config.train.eval_batch_size (0 = batch_size) rounded up to a multiple of the batch shards."""
  t = exp.config.train
  size = t.eval_batch_size or t.batch_size
  multiple = math.lcm(exp.batch_shards, jax.process_count())
  return -(-size // multiple) * multiple


def evaluate_split(
  exp: Experiment, state: TrainState, split: str, eval_step=None, keep_nodes: tuple[int, ...] = ()
) -> tuple[dict, dict | None]:
  """Metrics of `state` on one split (streaming; padded rows masked out).

  Returns (metrics as in results.json, trace) where trace holds first-horizon predictions and
  truth [windows, len(keep_nodes)] and the window index [windows] for plots (None without nodes).
  """
  eval_step = eval_step or compile_eval_step(exp, keep_nodes)
  meter = metrics.Metrics.for_protocol(exp.bundle.protocol, exp.bundle.spec)
  traces = []
  for batch in eval_batches(exp.bundle.splits[split], eval_batch_size(exp)):
    batch = sharding.put_batch({k: batch[k] for k in EVAL_KEYS}, exp.batch_shardings)
    with exp.context():
      out = jax.device_get(eval_step(state, batch))
    meter.add(out["sums"])
    if "trace" in out:
      traces.append(out["trace"])
  trace = None
  if traces:
    valid = np.concatenate([t["valid"] for t in traces]).astype(bool)
    trace = {k: np.concatenate([t[k] for t in traces])[valid] for k in ("pred", "true", "index")}
  return meter.compute(), trace
