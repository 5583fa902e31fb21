r"""Size a run before renting it: compile the sharded train step for N devices on this CPU.

  python -m stjax.compile_only --config=configs/st_link_pemsbay.py --topology=64
  python -m stjax.compile_only --config=configs/st_link_pemsbay.py --mesh=data:8,tensor:8
  python -m stjax.compile_only --config=configs/st_link_pemsbay.py --devices=8 --config.mesh.fsdp=8

The process re-executes itself with N simulated CPU devices (XLA_FLAGS is read when jax starts),
builds the experiment of `--config` with abstract values only (`jax.eval_shape` for params and
optimizer state, `jax.ShapeDtypeStruct` batches: no weights are loaded and no data is read),
lowers and compiles the jitted train step with its real shardings, and prints the per-device
memory from `compiled.memory_analysis()` (arguments, outputs, temporaries, generated code,
aliased = donated state reused for outputs, total) and the FLOPs from `cost_analysis()`, as a
table and a final JSON line. docs/scaling.md has measured tables.

Data: a dataset of the registry is replaced by a stand-in with its node count, step and protocol
(synthetic values, 1 channel), so PEMS-BAY sizes compile without the PEMS-BAY files;
`--data=real` reads the configured data instead (multi-channel datasets, custom files).

Kernel choices left at `auto` (`config.kernels`) are resolved as for a GPU of the mesh's size
(e.g. ST-LINK's MRFFN experts dense: CPU's grouped dispatch would misstate what the target runs).

Sizes are those of XLA's CPU backend: the same program on GPU/TPU differs in fusion, layouts and
kernels, so treat the numbers as a close estimate and re-check with
`compiled.memory_analysis()` on one real device of the target.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sys

_DEVICES_FLAG = re.compile(r"--xla_force_host_platform_device_count=\d+")
_CHILD_ENV = "STJAX_COMPILE_ONLY_DEVICES"


def parse_mesh(text: str) -> dict[str, int]:
  """'data:8,tensor:8' -> {'data': 8, 'tensor': 8} (UserError on anything else)."""
  from stjax.errors import UserError
  from stjax.sharding import MESH_AXES

  sizes = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    name, _, size = part.partition(":")
    if name not in MESH_AXES or not size.isdigit() or int(size) < 1 or name in sizes:
      raise UserError(
        f"--mesh: {part!r} is not AXIS:SIZE with AXIS one of {', '.join(MESH_AXES)} "
        "(each once) and SIZE >= 1, e.g. --mesh=data:8,tensor:8"
      )
    sizes[name] = int(size)
  if not sizes:
    raise UserError("--mesh: empty; e.g. --mesh=data:8,tensor:8")
  return sizes


def requested_devices(argv: list[str]) -> int:
  """The device count asked for by --devices / --topology / --mesh (read before absl parses)."""
  from stjax.errors import UserError

  values = {}
  for i, arg in enumerate(argv):
    for name in ("devices", "topology", "mesh"):
      if arg.startswith(f"--{name}="):
        values[name] = arg.split("=", 1)[1]
      elif arg == f"--{name}" and i + 1 < len(argv):
        values[name] = argv[i + 1]
  counts = []
  for name in ("devices", "topology"):
    if name in values:
      if not values[name].isdigit() or int(values[name]) < 1:
        raise UserError(f"--{name}: expected a positive device count, got {values[name]!r}")
      counts.append(int(values[name]))
  if "mesh" in values:
    sizes = parse_mesh(values["mesh"])
    counts.append(math.prod(sizes.values()))
  if not counts:
    raise UserError("give the target size: --topology=N (or --devices=N) or --mesh=data:8,tensor:8")
  if len(set(counts)) > 1:
    raise UserError(f"--devices/--topology/--mesh disagree on the device count: {counts}")
  return counts[0]


def _reexec_with_devices(count: int) -> None:
  """Restarts this command with `count` simulated CPU devices unless already running so."""
  if os.environ.get(_CHILD_ENV) == str(count):
    return
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    _DEVICES_FLAG.sub("", env.get("XLA_FLAGS", "")) + f" --xla_force_host_platform_device_count={count}"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  env[_CHILD_ENV] = str(count)
  os.execve(sys.executable, [sys.executable, "-m", "stjax.compile_only"] + sys.argv[1:], env)


def standin_data(config) -> str:
  """Replaces a registry dataset by synthetic values of its shape (in place); returns a note."""
  from stjax.data import registry, windows

  d = config.data
  if d.name == "synthetic":
    return f"synthetic ({d.synthetic.num_nodes} nodes, as configured)"
  info = registry.get(d.name)
  protocol = d.protocol or info.protocol
  steps_per_day = int(round(24 * 60 / info.step_minutes))
  rows = max(config.train.batch_size, config.train.eval_batch_size or 0)
  fresh = windows.default_data_config()
  fresh.name, fresh.protocol = "synthetic", protocol
  fresh.input_len, fresh.output_len = d.input_len, d.output_len
  fresh.synthetic.update(
    num_nodes=info.nodes,
    step_minutes=info.step_minutes,
    missing_rate=0.0,
    num_steps=2 * steps_per_day + 4 * rows + 200,
  )
  with config.unlocked():
    config.data = fresh
  return (
    f"stand-in for {info.name}: {info.nodes} nodes, {info.step_minutes:g}-min steps, {protocol} "
    "protocol, 1 channel (synthetic values; no file read)"
  )


def analyse(config, note: str = "") -> dict:
  """Compiles the train step of `config` on the current devices; returns the report dict."""
  import jax

  from stjax.data.windows import TRAIN_KEYS
  from stjax.perf import bench
  from stjax.train.experiment import build_experiment

  exp = build_experiment(config)
  b = config.train.batch_size
  example = exp.bundle.splits["train"].batch([0])
  shardings = exp.batch_shardings
  batch = {
    k: jax.ShapeDtypeStruct((b,) + example[k].shape[1:], example[k].dtype, sharding=shardings[k])
    for k in TRAIN_KEYS
  }
  compiled = bench.compile_train_step_for(exp, exp.abstract_state, batch)
  mem = compiled.memory_analysis()
  flops = bench.step_flops(
    compiled, functools.partial(bench.dense_attention_step, exp, exp.abstract_state, batch)
  ) or float("nan")
  params = exp.abstract_state.params
  n_params = sum(int(x.size) for x in jax.tree.leaves(params))
  memory = {
    "arguments": int(mem.argument_size_in_bytes),
    "outputs": int(mem.output_size_in_bytes),
    "temp": int(mem.temp_size_in_bytes),
    "generated_code": int(mem.generated_code_size_in_bytes),
    "aliased": int(mem.alias_size_in_bytes),
  }
  memory["total"] = (
    memory["arguments"] + memory["outputs"] - memory["aliased"] + memory["temp"] + memory["generated_code"]
  )
  spec = exp.bundle.spec
  return {
    "config_model": config.model.name,
    "data": note,
    "devices": jax.device_count(),
    "mesh": {k: int(v) for k, v in exp.mesh.shape.items()},
    "batch_size": b,
    "batch_x": [b, spec.input_len, spec.num_nodes, spec.in_channels],
    "params": n_params,
    "param_bytes_per_device": _shard_bytes(params),
    "state_bytes_per_device": _shard_bytes(exp.abstract_state),
    "batch_bytes_per_device": _shard_bytes(batch),
    "memory_per_device": memory,
    "flops_per_device": flops,
    "flops_total": flops * jax.device_count(),
  }


def _shard_bytes(tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings."""
  import jax

  return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def format_report(r: dict) -> str:
  def gib(n):
    return f"{n / 2**30:10.3f} GiB ({n / 2**20:,.1f} MiB)"

  m = r["memory_per_device"]
  lines = [
    f"compile_only: {r['config_model']} on {r['devices']} simulated CPU devices, mesh {r['mesh']}",
    f"  data: {r['data']}",
    f"  batch x {r['batch_x']}, {r['params']:,} params "
    f"({r['param_bytes_per_device'] / 2**20:,.1f} MiB of them per device)",
    "  per-device memory (XLA CPU memory_analysis):",
  ]
  for key in ("arguments", "outputs", "aliased", "temp", "generated_code", "total"):
    lines.append(f"    {key:<16}{gib(m[key])}")
  lines.append(f"  FLOPs per step: {r['flops_per_device']:.4g} per device, {r['flops_total']:.4g} in total")
  return "\n".join(lines)


def _main(argv) -> None:
  import dataclasses

  import jax
  import ml_collections
  from absl import flags

  from stjax.errors import UserError, cli_entry
  from stjax.kernels import resolve_kernels
  from stjax.sharding import MESH_AXES
  from stjax.train import cli as train_cli

  @cli_entry
  def run():
    config = train_cli._CONFIG.value
    FLAGS = flags.FLAGS
    if len(argv) > 1:
      raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    with config.unlocked():
      if FLAGS.mesh:
        sizes = parse_mesh(FLAGS.mesh)
        for axis in MESH_AXES:
          config.mesh[axis] = sizes.get(axis, 1)
      note = standin_data(config) if FLAGS.data == "standin" else f"{config.data.name} (real data)"
      accelerator = resolve_kernels(config.kernels, backend="gpu", num_devices=jax.device_count())
      config.kernels = ml_collections.ConfigDict(dataclasses.asdict(accelerator))  # as on the target
      note += f"; kernels as on an accelerator ({', '.join(f'{k}={v}' for k, v in config.kernels.items())})"
    report = analyse(config, note)
    print(format_report(report), flush=True)
    print(json.dumps(report), flush=True)

  run()


def main() -> None:
  from absl import app, flags

  from stjax.errors import UserError

  try:
    count = requested_devices(sys.argv[1:])
  except UserError as e:
    print(f"stjax: error: {e}", file=sys.stderr)
    sys.exit(2)
  _reexec_with_devices(count)
  from stjax.train import cli as train_cli

  flags.DEFINE_integer("devices", None, "Simulated device count (same as --topology).")
  flags.DEFINE_integer("topology", None, "Target device count N of the mesh (config.mesh fills it).")
  flags.DEFINE_string("mesh", None, "Explicit mesh, e.g. data:8,tensor:8 (other axes 1).")
  flags.DEFINE_enum(
    "data", "standin", ["standin", "real"], "standin: registry shapes, no files; real: read config.data."
  )
  app.run(_main, flags_parser=train_cli.parse_flags)


if __name__ == "__main__":
  main()
