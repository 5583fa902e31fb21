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
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from typing import Any, Callable, Iterable

import jax
import numpy as np

from stjax.data.windows import TRAIN_KEYS
from stjax.errors import UserError
from stjax.tables import markdown_table

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


COLUMNS = [
  ("model", "model"),
  ("nodes", "N"),
  ("batch", "B"),
  ("compute_dtype", "dtype"),
  ("step_time_s", "step (s)"),
  ("compile_time_s", "compile (s)"),
  ("samples_per_s", "samples/s"),
  ("tokens_per_s", "tokens/s"),
  ("flops_per_step", "FLOPs/step"),
  ("mfu", "MFU"),
  ("peak_memory_bytes", "peak mem (B)"),
  ("data_samples_per_s", "data samples/s"),
]


def main(argv):
  from absl import flags

  del argv
  f = flags.FLAGS
  config = f.config
  if config is None:
    raise UserError("--config: required (a config file, e.g. configs/st_link_pemsbay.py)")
  result = run(
    config,
    batch=f.batch,
    nodes=f.nodes,
    steps=f.steps,
    warmup=f.warmup,
    num_steps=f.num_steps,
    data_batches=f.data_batches,
    peak_flops=f.peak_flops,
    profile_dir=f.profile_dir,
    profile_depth=f.profile_depth,
  )
  if "profile" in result:
    cols = [("ms_per_step", "ms/step"), ("share", "share"), ("ops", "ops")]
    print(f"Op time per step by component (trace in {f.profile_dir}):")
    print(
      markdown_table(result["profile"]["components"], [("pass", "pass"), ("component", "component")] + cols)
    )
    print("By op kind:")
    print(markdown_table(result["profile"]["op_kinds"], [("kind", "kind")] + cols))
  print(markdown_table([result], COLUMNS))
  print(json.dumps(result), flush=True)


def _define_flags():
  from absl import flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, "Training config file (as for stjax.train).")
  flags.DEFINE_integer("batch", 8, "Global batch size B.")
  flags.DEFINE_integer("nodes", 207, "Number of nodes N of the synthetic data.")
  flags.DEFINE_integer("steps", 20, "Timed train steps (the median is reported); 0 = compile and size only.")
  flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
  flags.DEFINE_integer("num_steps", 864, "Time steps of the synthetic series (windows to draw from).")
  flags.DEFINE_integer("data_batches", 20, "Batches drawn to time the data pipeline alone; 0 = skip.")
  flags.DEFINE_string(
    "profile_dir",
    None,
    "Also trace --steps steps into this folder and print op time "
    "per model component (stjax.perf.op_profile).",
  )
  flags.DEFINE_integer("profile_depth", 2, "Module names kept per component in the profile table.")
  flags.DEFINE_float(
    "peak_flops", None, "Peak FLOP/s per device for MFU when the device is not in the table."
  )


def cli_main() -> None:
  """`python -m stjax.bench` (stjax/bench.py calls this)."""
  from absl import app

  from stjax.errors import cli_entry

  _define_flags()
  app.run(cli_entry(main))


if __name__ == "__main__":
  cli_main()
