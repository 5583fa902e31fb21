"""stjax vs the PyTorch reference (eager and torch.compile), side by side in one run.

    python benchmarks/compare_torch.py --config=benchmarks/configs/st_link_cpu.py --batch=4 --nodes=64 \
        --steps=10 [--config.x=y ...] [--out=docs/compare.md] [--no_compile]

Same shapes, settings, dtype (float32) and initialisation: the experiment is built once exactly as
`python -m stjax.bench` builds it (synthetic data, the trainer's jitted step), and its initial
parameters (and MRFFN memory keys) are copied into the torch model (`torch_reference.weights`).
The torch step is what the research code does: forward, loss (masked MAE in original units + aux
loss), backward, optimizer step, with the same frozen parameters (`requires_grad=False` from the
stjax trainability mask) and the torch twin of the config's optimizer (`torch_optimizer`). Steps are
interleaved (one step of each framework per round, `--steps` rounds after `--warmup`), so a change
of machine load hits all frameworks alike; medians are reported.

On a GPU both frameworks share the device: JAX's memory preallocation is switched off, torch runs
on CUDA with TF32 float32 matmuls (`torch.set_float32_matmul_precision("high")`, as JAX's default
precision computes them there), every torch step ends with `torch.cuda.synchronize()`, and peak
memories are JAX's
`peak_bytes_in_use` and, per torch model, torch's `max_memory_allocated` over its first two steps
above what was already allocated. On CPU the stjax peak is the compiled
step's memory analysis and torch's is not measured.

Prints a markdown table and, as its last line, one JSON object with all measurements.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share a GPU with torch

_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `python benchmarks/compare_torch.py` from anywhere
  sys.path.insert(0, str(_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.torch_reference import build_reference, weights  # noqa: E402
from stjax.data.windows import MODEL_INPUT_KEYS, TRAIN_KEYS  # noqa: E402
from stjax.errors import UserError  # noqa: E402
from stjax.kernels import Kernels  # noqa: E402
from stjax.perf import bench  # noqa: E402
from stjax.tables import markdown_table  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_batch(host: dict) -> dict[str, torch.Tensor]:
  return {k: torch.from_numpy(np.ascontiguousarray(host[k])).to(DEVICE) for k in TRAIN_KEYS}


def masked_mae_torch(pred: torch.Tensor, y: torch.Tensor, null_rule: str) -> torch.Tensor:
  """Same as `stjax.metrics.masked_mae` (original units)."""
  if null_rule == "zero":
    mask = y != 0
  elif null_rule == "positive":
    mask = y > 0
  elif null_rule == "gt5":
    mask = y > 5
  elif null_rule == "none":
    mask = torch.ones_like(y, dtype=torch.bool)
  else:
    raise UserError(f"unknown null rule {null_rule!r}")
  err = torch.where(mask, (pred - y).abs(), torch.zeros_like(pred))
  return err.sum() / torch.clamp(mask.sum(), min=1)


def make_torch_loss(model, bundle):
  """batch -> scalar training loss, as the stjax trainer computes it."""
  protocol, scaler = bundle.protocol, bundle.target_scaler
  mean = torch.from_numpy(np.asarray(scaler.mean, np.float32)).to(DEVICE)
  std = torch.from_numpy(np.asarray(scaler.std, np.float32)).to(DEVICE)

  def loss_fn(batch):
    pred, aux = model({k: batch[k] for k in MODEL_INPUT_KEYS})
    if protocol.loss == "masked_mae":
      data_loss = masked_mae_torch(pred * std + mean, batch["y"], protocol.null_rule)
    elif protocol.loss == "mse":
      data_loss = ((pred - (batch["y"] - mean) / std) ** 2).mean()
    else:
      raise UserError(f"protocol {protocol.name}: unknown loss {protocol.loss!r}")
    return data_loss + aux

  return loss_fn


def torch_optimizer(model: torch.nn.Module, optim_config) -> torch.optim.Optimizer:
  """The torch twin of `config.optim` over the trainable parameters.

  adamw -> AdamW, adam -> Adam (L2 weight decay), ranger -> RAdam with decoupled weight decay (the
  lookahead and gradient centralisation of ST-LLM's Ranger are elementwise passes, not modelled).
  """
  params = [p for p in model.parameters() if p.requires_grad]
  c = optim_config
  kw = dict(
    lr=float(c.learning_rate),
    betas=(float(c.b1), float(c.b2)),
    eps=float(c.eps),
    weight_decay=float(c.weight_decay),
  )
  if c.name == "adamw":
    return torch.optim.AdamW(params, **kw)
  if c.name == "adam":
    return torch.optim.Adam(params, **kw)
  if c.name == "ranger":
    return torch.optim.RAdam(params, decoupled_weight_decay=True, **kw)
  raise UserError(f"config.optim.name: no torch twin for {c.name!r}")


def torch_stepper(loss_fn, opt):
  """One torch train step on a batch: zero grads, loss, backward, optimizer step -> loss."""

  def step(batch):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(batch)
    loss.backward()
    opt.step()
    if DEVICE.type == "cuda":
      torch.cuda.synchronize()
    return loss

  return step


def compare(
  config,
  *,
  batch: int,
  nodes: int,
  steps: int,
  warmup: int,
  num_steps: int = 864,
  use_compile: bool = True,
  threads: int | None = None,
) -> dict:
  """Runs stjax, torch eager and (optionally) torch.compile on one experiment; returns rows."""
  import jax

  if threads:
    torch.set_num_threads(threads)
  if DEVICE.type == "cuda":  # JAX's default float32 matmuls are TF32 on NVIDIA tensor cores; torch's are not
    torch.set_float32_matmul_precision("high")
  prep = bench.prepare(config, batch=batch, nodes=nodes, num_steps=num_steps)
  cfg, exp = prep.config, prep.exp
  variables = jax.device_get(prep.state.variables())
  trainable = weights.flatten({"params": jax.device_get(exp.trainable)})
  batches = [torch_batch(b) for b in prep.host_batches]

  carry = {"state": prep.state}

  def run_stjax(i):
    carry["state"], out = prep.step(carry["state"], prep.batches[i])
    jax.block_until_ready((carry["state"], out))
    return out["loss"]

  runners = {"stjax (jax.jit)": run_stjax}
  first = {"stjax (jax.jit)": prep.compiled.compile_time_s}
  modes = [("torch eager", False)] + ([("torch.compile", True)] if use_compile else [])
  torch_peaks = {}
  for label, compiled in modes:
    if DEVICE.type == "cuda":  # this model's own peak: allocations above what is already resident
      torch.cuda.synchronize()
      base = torch.cuda.memory_allocated()
      torch.cuda.reset_peak_memory_stats()
    model = build_reference(cfg.model, exp.bundle.spec, Kernels(**exp.config.kernels))
    name_map = model.name_map()
    weights.load_stjax_params(model, variables, name_map, unused=model.unused_stjax())
    model.to(DEVICE)
    for tname, p in model.named_parameters():
      p.requires_grad_(bool(trainable[name_map[tname][0]]))
    model.train()
    loss_fn = make_torch_loss(model, exp.bundle)
    if compiled:
      loss_fn = torch.compile(loss_fn)
    step = torch_stepper(loss_fn, torch_optimizer(model, cfg.optim))
    start = time.perf_counter()
    loss = step(batches[0])
    first[label] = time.perf_counter() - start
    if not torch.isfinite(loss):
      raise RuntimeError(f"{label}: non-finite loss {loss.item()}")
    step(batches[1 % len(batches)])  # optimizer state now exists: the steady-state peak
    torch_peaks[label] = torch.cuda.max_memory_allocated() - base if DEVICE.type == "cuda" else None
    runners[label] = lambda i, step=step: step(batches[i])

  times = bench.interleaved_times(runners, len(batches), steps, warmup)
  jax_peak = bench.device_peak_memory(list(exp.mesh.devices.flat)) or prep.compiled.memory_bytes
  rows = []
  for label, ts in times.items():
    med = statistics.median(ts)
    rows.append(
      dict(
        framework=label,
        step_time_s=med,
        step_time_min_s=min(ts),
        first_step_s=first[label],
        samples_per_s=batch / med,
        peak_memory_bytes=jax_peak if label.startswith("stjax") else torch_peaks[label],
      )
    )
  eager = times["torch eager"]
  for r in rows:
    r["vs_torch_eager"] = r["step_time_s"] / statistics.median(eager)
  return {
    "model": cfg.model.name,
    "nodes": nodes,
    "batch": batch,
    "steps": steps,
    "warmup": warmup,
    "dtype": "float32",
    "torch_float32_matmul": torch.get_float32_matmul_precision(),
    "torch_threads": torch.get_num_threads(),
    "jax": jax.__version__,
    "torch": torch.__version__,
    "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
    "device": jax.devices()[0].device_kind,
    "stjax_flops_per_step": prep.compiled.flops_per_device,
    "rows": rows,
  }


COLUMNS = [
  ("framework", "framework"),
  ("step_time_s", "step (s, median)"),
  ("step_time_min_s", "step (s, min)"),
  ("vs_torch_eager", "x torch eager"),
  ("samples_per_s", "samples/s"),
  ("first_step_s", "compile / first step (s)"),
  ("peak_memory_bytes", "peak mem (B)"),
]


def main(argv):
  from absl import flags

  del argv
  f = flags.FLAGS
  if f.config is None:
    raise UserError("--config: required")
  result = compare(
    f.config,
    batch=f.batch,
    nodes=f.nodes,
    steps=f.steps,
    warmup=f.warmup,
    num_steps=f.num_steps,
    use_compile=f.compile,
    threads=f.threads,
  )
  table = markdown_table(result["rows"], COLUMNS)
  header = (
    f"{result['model']}, N={result['nodes']}, B={result['batch']}, float32, median of {result['steps']} "
    f"steps after {result['warmup']} warm-up; {result['machine']}, jax {result['jax']}, torch "
    f"{result['torch']} ({result['torch_threads']} threads)"
  )
  print(header)
  print(table)
  if f.out:
    out = pathlib.Path(f.out)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(header + "\n\n" + table + "\n")
    tmp.replace(out)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags

  from stjax.errors import cli_entry

  config_flags.DEFINE_config_file("config", None, "Training config file (as for stjax.train).")
  flags.DEFINE_integer("batch", 8, "Global batch size.")
  flags.DEFINE_integer("nodes", 207, "Nodes of the synthetic data.")
  flags.DEFINE_integer("steps", 20, "Timed steps per framework.")
  flags.DEFINE_integer("warmup", 3, "Untimed steps after the first.")
  flags.DEFINE_integer("num_steps", 864, "Time steps of the synthetic series.")
  flags.DEFINE_bool("compile", True, "Also time torch.compile.")
  flags.DEFINE_integer("threads", 0, "torch intra-op threads (0 = torch's default).")
  flags.DEFINE_string("out", "", "Write the markdown table here too.")
  app.run(cli_entry(main))
