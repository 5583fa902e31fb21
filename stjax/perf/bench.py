"""Train-step benchmark: `python -m stjax.bench --config=CONFIG --batch=B --nodes=N --steps=S`.

Builds the configured model for N nodes on the built-in synthetic data and times exactly the
train step users run (`stjax.train.loop`'s jitted step), then prints a markdown table and, as the
LAST line, one JSON object:

| key | meaning |
|---|---|
| `step_time_s` | median wall time of one train step, device-synchronised (`block_until_ready`) |
| `step_time_p10_s`, `step_time_p90_s` | 10th / 90th percentile of the timed steps |
| `compile_time_s` | lowering + XLA compilation of the train step |
| `samples_per_s`, `tokens_per_s` | batch / step time; language-model tokens per sample x samples/s |
| `flops_per_step` | XLA cost analysis of the compiled step, summed over the devices that run it (model FLOPs: a step with blockwise attention is costed with dense scores, `step_flops`) |
| `mfu` | flops_per_step / step time / (devices x peak FLOP/s); null when the peak is unknown |
| `peak_memory_bytes` | `memory_stats()["peak_bytes_in_use"]` where the backend has it, else the compiled step's memory analysis (arguments + outputs + temporaries - aliased), else null |
| `data_samples_per_s` | the data pipeline alone (windowing, scaling, batching), no model |
| `profile` | with `--profile_dir`: op time per step by model component and by op kind (`stjax.perf.op_profile`), else absent |

Timing rules: `--warmup` untimed steps after compilation, then `--steps` timed steps, each
synchronised before the clock stops; batches are placed on the devices before timing so the step
time excludes host-to-device copies (the data pipeline is measured on its own).

`--steps=0` compiles and sizes the step without running it (sizes too slow to time on this
machine): times, samples/s and MFU are null, `peak_memory_bytes` is the compiled step's memory
analysis, `loss` is null.

The pieces live beside this module: `stjax.perf.costs` (FLOPs, peaks, memory), `stjax.perf.timing`
(the clock rules) and `stjax.perf.bench_cli` (flags and printing); their public names are
importable from here too.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any

import jax
import numpy as np

from stjax.data.windows import TRAIN_KEYS
from stjax.errors import UserError
from stjax.perf.bench_cli import COLUMNS, cli_main, main  # noqa: F401 (public here too)
from stjax.perf.costs import (  # noqa: F401 (public here too)
  PEAK_FLOPS,
  Compiled,
  compile_step,
  compile_train_step_for,
  compiled_memory_bytes,
  dense_attention_step,
  device_peak_memory,
  peak_flops_per_device,
  step_flops,
  xla_flops,
)
from stjax.perf.timing import interleaved_times, summarize_times, time_calls  # noqa: F401 (public here too)

# ----------------------------------------------------------------------------------------------
# The benchmark of a config: build (as the trainer does), compile, time, measure.


def llm_tokens_per_sample(model_config, spec) -> int | None:
  """Language-model tokens one sample feeds the backbone, or None when the model has no such notion.

  ST-LINK: N * (T_in / patch_len) patch tokens; ST-LLM: N node tokens; STH-SepNet: the patches of
  the node-pooled series, (T_in - patch_len) / stride + 2 (TimeLLM's replication-padded unfold).
  """
  name = model_config.name
  if name == "st_link":
    return spec.num_nodes * (spec.input_len // int(model_config.patch_len))
  if name == "st_llm":
    return spec.num_nodes
  if name == "sth_sepnet" and "patch_len" in model_config and "stride" in model_config:
    return (spec.input_len - int(model_config.patch_len)) // int(model_config.stride) + 2
  return None


def apply_overrides(config, *, batch: int, nodes: int, num_steps: int):
  """The config the benchmark runs: synthetic data with `nodes` nodes, batch `batch`, random init.

  Pretrained weights are not loaded (no network needed; the step's cost does not depend on the
  values). Unknown fields fail in `stjax.train.loop.validate_config` as they would for training.
  """
  config = config.copy_and_resolve_references()
  if batch < 1:
    raise UserError(f"--batch: must be >= 1, got {batch}")
  if nodes < 2:
    raise UserError(f"--nodes: must be >= 2, got {nodes}")
  config.data.name = "synthetic"
  config.data.path = ""
  config.data.graph_path = ""
  config.data.synthetic.num_nodes = nodes
  config.data.synthetic.num_steps = num_steps
  config.train.batch_size = batch
  if "pretrained" in config.model:
    config.model.pretrained = ""
  return config


@dataclasses.dataclass
class Prepared:
  """A compiled train step ready to time: the experiment, its state and device batches."""

  config: Any  # the config actually run (after `apply_overrides`)
  exp: Any  # stjax.train.loop.Experiment
  compiled: Compiled
  state: Any  # TrainState (donated by each call: always use the returned one)
  batches: list[dict[str, Any]]  # device batches x, tod, dow, y (sharded like the trainer's)
  host_batches: list[dict[str, np.ndarray]]  # the same batches on the host (for other frameworks)

  def step(self, state, batch):
    """One train step: (state, batch) -> (new state, measurements)."""
    with self.exp.context():
      return self.compiled.fn(state, batch)


def prepare(
  config, *, batch: int, nodes: int, num_steps: int = 864, num_distinct_batches: int = 4
) -> Prepared:
  """Builds the experiment for `config` on synthetic data and compiles the trainer's step for it."""
  from stjax import sharding
  from stjax.train.experiment import build_experiment
  from stjax.train.step import compile_train_step

  config = apply_overrides(config, batch=batch, nodes=nodes, num_steps=num_steps)
  exp = build_experiment(config)
  bundle = exp.bundle
  train = bundle.splits["train"]
  if batch % exp.batch_shards:
    raise UserError(f"--batch: {batch} is not divisible by the {exp.batch_shards} data shards of the mesh")
  if len(train) < batch:
    raise UserError(
      f"--batch: {batch} exceeds the {len(train)} training windows of {num_steps} synthetic "
      "steps; raise --num_steps"
    )

  jitted = compile_train_step(exp)  # exactly the step (and shardings) stjax.train runs
  rng = np.random.default_rng(0)
  host_batches, batches = [], []
  with exp.context():
    state = exp.init_state()
    for _ in range(num_distinct_batches):
      host = train.batch(rng.choice(len(train), size=batch, replace=False))
      host_batches.append({k: host[k] for k in TRAIN_KEYS})
      batches.append(sharding.put_batch(host_batches[-1], exp.batch_shardings, whole=True))
    compiled = compile_step(jitted, state, batches[0])
  compiled.flops_per_device = step_flops(
    compiled.fn, functools.partial(dense_attention_step, exp, state, batches[0])
  )
  return Prepared(config, exp, compiled, state, batches, host_batches)


def run(
  config,
  *,
  batch: int,
  nodes: int,
  steps: int,
  warmup: int = 3,
  num_steps: int = 864,
  data_batches: int = 20,
  peak_flops: float | None = None,
  profile_dir: str | None = None,
  profile_depth: int = 2,
) -> dict[str, Any]:
  """Builds the experiment for `config` on synthetic data and benchmarks its train step.

  Returns the result dict documented in the module docstring (plus shapes and environment).
  profile_dir: also trace `steps` more steps there and attribute op time to model components.
  """
  if steps < 0:
    raise UserError(f"--steps: must be >= 0 (0 = compile and size only), got {steps}")
  if steps == 0 and profile_dir:
    raise UserError("--profile_dir: needs timed steps (--steps >= 1)")
  prep = prepare(
    config, batch=batch, nodes=nodes, num_steps=num_steps, num_distinct_batches=4 if steps else 1
  )  # sizing needs one example batch
  config, exp, compiled, bundle = prep.config, prep.exp, prep.compiled, prep.exp.bundle
  state, loss, times = prep.state, None, []
  if steps:
    times, state = time_calls(prep.step, state, prep.batches, steps=steps, warmup=warmup)
    # One finite loss proves the timed step computed something real.
    state, measurements = prep.step(state, prep.batches[0])
    loss = float(jax.device_get(measurements["loss"]))
    if not math.isfinite(loss):
      raise RuntimeError(f"benchmark step produced a non-finite loss {loss}")

  devices = list(exp.mesh.devices.flat)
  dtype = config.train.compute_dtype
  result: dict[str, Any] = {
    "model": config.model.name,
    "nodes": nodes,
    "batch": batch,
    "input_len": bundle.spec.input_len,
    "output_len": bundle.spec.output_len,
    "compute_dtype": dtype,
    "backend": jax.default_backend(),
    "device_kind": devices[0].device_kind,
    "num_devices": len(devices),
    "steps": steps,
    "warmup": warmup,
    "loss": loss,
  }
  result.update(summarize_times(times))
  step_time = result["step_time_s"]  # None when nothing ran (--steps=0)

  def per_second(amount):
    return None if amount is None or step_time is None else amount / step_time

  result["compile_time_s"] = compiled.compile_time_s
  result["samples_per_s"] = per_second(batch)
  tokens = llm_tokens_per_sample(config.model, bundle.spec)
  result["tokens_per_sample"] = tokens
  result["tokens_per_s"] = per_second(None if tokens is None else tokens * batch)
  flops = None if compiled.flops_per_device is None else compiled.flops_per_device * len(devices)
  result["flops_per_step"] = flops
  peak = peak_flops if peak_flops is not None else peak_flops_per_device(devices[0], dtype)
  result["peak_flops_per_device"] = peak
  result["mfu"] = per_second(None if flops is None or peak is None else flops / (peak * len(devices)))
  device_peak = device_peak_memory(devices) if steps else None  # nothing ran: the compiled size
  if device_peak is not None:
    result["peak_memory_bytes"], result["peak_memory_source"] = device_peak, "memory_stats"
  elif compiled.memory_bytes is not None:
    result["peak_memory_bytes"], result["peak_memory_source"] = (
      compiled.memory_bytes,
      "compiled_memory_analysis",
    )
  else:
    result["peak_memory_bytes"], result["peak_memory_source"] = None, None
  result["data_samples_per_s"] = data_throughput(exp, batch, data_batches)
  if profile_dir:
    from stjax.perf import op_profile

    result["profile"], state = op_profile.profile(
      prep.step, state, prep.batches, compiled.fn, steps, profile_dir, profile_depth
    )
  return result


def data_throughput(exp, batch: int, num_batches: int) -> float | None:
  """Samples/s of the training data pipeline alone (host side: windows, scaling, batching)."""
  if num_batches <= 0:
    return None
  from stjax.data import pipeline

  source = exp.bundle.splits["train"]
  epochs = -(-(num_batches + 1) // pipeline.steps_per_epoch(source, batch))
  it = iter(pipeline.train_batches(source, batch, seed=0, num_epochs=epochs))
  next(it)  # start-up (worker threads, first read) is not throughput
  start = time.perf_counter()
  for _ in range(num_batches):
    next(it)
  return num_batches * batch / (time.perf_counter() - start)


if __name__ == "__main__":
  cli_main()
