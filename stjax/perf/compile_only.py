r"""Size a run before renting it: compile the exact sharded train step for a target, on this CPU.

  python -m stjax.compile_only --config=configs/st_link_pemsbay.py --tpu=v5e:2x4      # real TPU compiler
  python -m stjax.compile_only --config=configs/st_link_pemsbay.py --tpu=v5e-1 --max_batch
  python -m stjax.compile_only --config=configs/st_link_pemsbay.py --tpu=v5e-8 --nodes=8600 \
      --config.mesh.nodes=8 --config.train.batch_size=16
  python -m stjax.compile_only --config=configs/st_link_pemsbay.py --topology=64         # CPU estimate
  python -m stjax.compile_only --config=configs/st_link_pemsbay.py --mesh=data:8,tensor:8

`--tpu=NAME` (v4/v5e/v5p/v6e: `v5e:2x4`, `v5e-8`, `v5p-8`, ...; `stjax.perf.tpu`) runs the real TPU
compiler (libtpu, `pip install 'stjax[tpu]'`) on compile-only devices of that slice: the
experiment's mesh is built over them, so `config.kernels` resolve for "tpu" as on the chips, and
the executable's `memory_analysis()` is what one chip holds. A program larger than HBM is refused by
the compiler; that is reported as `fits: false` with the amount its message names. `--max_batch`
bisects the global batch over compiles for the largest that fits (multiples of data x fsdp).
Without `--tpu` the process re-executes itself with N simulated CPU devices (`--topology`,
`--devices`, `--mesh`) and XLA CPU's sizes are printed, labelled as an estimate: GPU/TPU fuse,
lay out and schedule differently.

Either way the experiment of `--config` is built from abstract values only (`jax.eval_shape`,
`ShapeDtypeStruct` batches: no weights loaded, no data read), the jitted, donated train step
(`compile_train_step`) is lowered with its real shardings and compiled, and a table plus a last
line of JSON are printed: `hbm_per_device_bytes` (arguments + outputs - aliased + temporaries +
code), `hbm_capacity_bytes` (one chip's HBM; null on the CPU path), `fits`, `flops_per_step`,
and the breakdown.

Data: a dataset of the registry is replaced by a stand-in with its node count (or `--nodes=N`,
e.g. 8600 for LargeST-California), step and protocol (synthetic values, 1 channel), so sizes
compile without the files; `--data=real` reads the configured data instead.

FLOPs: `flops_per_step` is the model's FLOPs per global step, counted by XLA's cost analysis of
the same step lowered for one CPU device with dense-score attention and dense experts (no
compile): XLA costs a loop body once (the blockwise attention) and sees nothing inside Pallas or
cuDNN custom calls.
"""

from __future__ import annotations

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


def _flag_values(argv: list[str], names: tuple[str, ...]) -> dict[str, str]:
  """--name=value / --name value pairs of `names` in argv (read before absl parses)."""
  values = {}
  for i, arg in enumerate(argv):
    for name in names:
      if arg.startswith(f"--{name}="):
        values[name] = arg.split("=", 1)[1]
      elif arg == f"--{name}" and i + 1 < len(argv):
        values[name] = argv[i + 1]
  return values


def requested_devices(argv: list[str]) -> int:
  """The device count asked for by --devices / --topology / --mesh / --tpu (read before absl parses)."""
  from stjax.errors import UserError
  from stjax.perf import tpu

  values = _flag_values(argv, ("devices", "topology", "mesh", "tpu"))
  counts = []
  for name in ("devices", "topology"):
    if name in values:
      if not values[name].isdigit() or int(values[name]) < 1:
        raise UserError(f"--{name}: expected a positive device count, got {values[name]!r}")
      counts.append(int(values[name]))
  if "tpu" in values:
    counts.append(tpu.parse_tpu(values["tpu"]).chips)
  if "mesh" in values:
    sizes = parse_mesh(values["mesh"])
    counts.append(math.prod(sizes.values()))
  if not counts:
    raise UserError(
      "give the target: --tpu=v5e:2x4 (real TPU compiler), or --topology=N / --mesh=data:8,tensor:8 (CPU estimate)"
    )
  if len(set(counts)) > 1:
    raise UserError(f"--devices/--topology/--mesh/--tpu disagree on the device count: {counts}")
  return counts[0]


def _reexec(count: int, on_tpu: bool) -> None:
  """Restarts this command with the environment JAX must start with, unless already running so:
  `count` simulated CPU devices, or (TPU) one CPU device, JAX on CPU and libtpu's lock file
  shared (compile-only use needs no chip)."""
  want = "tpu" if on_tpu else str(count)
  if os.environ.get(_CHILD_ENV) == want:
    return
  env = dict(os.environ)
  flags = _DEVICES_FLAG.sub("", env.get("XLA_FLAGS", ""))
  env["XLA_FLAGS"] = (flags if on_tpu else flags + f" --xla_force_host_platform_device_count={count}").strip()
  env["JAX_PLATFORMS"] = "cpu"
  if on_tpu:
    env["ALLOW_MULTIPLE_LIBTPU_LOAD"] = "1"
    env.setdefault("TPU_STDERR_LOG_LEVEL", "3")
    env.setdefault("TPU_MIN_LOG_LEVEL", "3")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  env[_CHILD_ENV] = want
  os.execve(sys.executable, [sys.executable, "-m", "stjax.compile_only"] + sys.argv[1:], env)


def analyse(config, note: str = "", devices=None, hbm_bytes: int | None = None, flops: bool = True) -> dict:
  """Compiles the train step of `config` over `devices` (default: this process's, the simulated
  CPU path); returns the report dict. `hbm_bytes`: one device's memory (TPU), which decides `fits`;
  an out-of-memory refusal of the compiler is `fits: false`, not an error."""
  import jax

  from stjax.perf import bench, sizing, tpu
  from stjax.train.experiment import build_experiment

  exp = build_experiment(config, devices=devices)
  b = config.train.batch_size
  batch = sizing.abstract_batch(exp, b)
  params = exp.abstract_state.params
  report = {
    "config_model": config.model.name,
    "data": note,
    "backend": exp.mesh.devices.flat[0].platform,
    "device_kind": exp.mesh.devices.flat[0].device_kind,
    "devices": int(exp.mesh.size),
    "mesh": {k: int(v) for k, v in exp.mesh.shape.items()},
    "kernels": dict(exp.config.kernels),
    "compute_dtype": config.train.compute_dtype,
    "levers": sizing.levers_of(exp.config),
    "batch_size": b,
    "batch_x": list(batch["x"].shape),
    "params": sum(int(x.size) for x in jax.tree.leaves(params)),
    "param_bytes_per_device": sizing.shard_bytes(params),
    "state_bytes_per_device": sizing.shard_bytes(exp.abstract_state),
    "batch_bytes_per_device": sizing.shard_bytes(batch),
    "hbm_capacity_bytes": hbm_bytes,
  }
  try:
    compiled = bench.compile_train_step_for(exp, exp.abstract_state, batch)
  except Exception as e:
    if hbm_bytes is None or not tpu.is_out_of_memory(e):
      raise
    temp = tpu.oom_required_bytes(e)  # the temporaries the compiler could not place
    state_and_batch = report["state_bytes_per_device"] + report["batch_bytes_per_device"]
    report.update(
      fits=False,
      temp_bytes_from_compiler=temp,
      # temporaries + the state and batch shards (arguments): what one chip would need at least
      hbm_per_device_bytes=None if temp is None else temp + state_and_batch,
      compiler_message=str(e).strip().splitlines()[0][:400],
    )
  else:
    mem = compiled.memory_analysis()
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
    report["memory_per_device"] = memory
    report["hbm_per_device_bytes"] = memory["total"]
    report["fits"] = None if hbm_bytes is None else memory["total"] <= hbm_bytes
  if hbm_bytes is not None and report["hbm_per_device_bytes"] is not None:
    report["headroom_bytes"] = hbm_bytes - report["hbm_per_device_bytes"]
  if flops:
    report["flops_per_step"] = sizing.model_flops(exp.config, b)
    report["flops_per_device"] = report["flops_per_step"] / report["devices"]
  return report


def format_report(r: dict) -> str:
  def gib(n):
    return "n/a" if n is None else f"{n / 2**30:10.3f} GiB ({n / 2**20:,.1f} MiB)"

  where = (
    f"{r['target']}, real TPU compiler"
    if r.get("target")
    else f"{r['devices']} simulated CPU devices (estimate)"
  )
  lines = [
    f"compile_only: {r['config_model']} on {where}, mesh {r['mesh']}",
    f"  data: {r['data']}",
    f"  kernels: {', '.join(f'{k}={v}' for k, v in r['kernels'].items())}; levers: "
    + ", ".join(f"{k}={v}" for k, v in r["levers"].items()),
    f"  batch x {r['batch_x']}, {r['params']:,} params "
    f"({r['param_bytes_per_device'] / 2**20:,.1f} MiB of them per device)",
  ]
  m = r.get("memory_per_device")
  if m:
    lines.append(f"  per-device memory ({r['backend'].upper()} memory_analysis):")
    for key in ("arguments", "outputs", "aliased", "temp", "generated_code", "total"):
      lines.append(f"    {key:<16}{gib(m[key])}")
  else:
    lines.append(f"  the compiler refused the program: {r.get('compiler_message', '')}")
  if r.get("hbm_capacity_bytes"):
    verdict = "fits" if r["fits"] else "does NOT fit"
    lines.append(
      f"  HBM per chip {gib(r['hbm_capacity_bytes'])}, needed {gib(r['hbm_per_device_bytes'])}: {verdict}"
      f" (headroom {gib(r.get('headroom_bytes'))})"
    )
  if "flops_per_step" in r:
    lines.append(
      f"  model FLOPs per step: {r['flops_per_step']:.4g} ({r['flops_per_device']:.4g} per device)"
    )
  if "max_batch" in r:
    fail = r["max_batch_first_failure"]
    lines.append(
      f"  largest global batch that fits: {r['max_batch']}"
      + (f" ({fail} does not)" if fail else " (the search limit)")
      + f", {r['max_batch_compiles']} compiles"
    )
  return "\n".join(lines)


def _main(argv) -> None:
  import dataclasses

  import jax
  import ml_collections
  from absl import flags

  from stjax.errors import UserError, cli_entry
  from stjax.kernels import resolve_kernels
  from stjax.perf import sizing, tpu
  from stjax.sharding import MESH_AXES
  from stjax.train import cli as train_cli

  @cli_entry
  def run():
    config = train_cli._CONFIG.value
    FLAGS = flags.FLAGS
    if len(argv) > 1:
      raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    target = tpu.parse_tpu(FLAGS.tpu) if FLAGS.tpu else None
    if FLAGS.max_batch and target is None:
      raise UserError("--max_batch: needs --tpu (the CPU estimate has no memory limit to fit)")
    with config.unlocked():
      if FLAGS.mesh:
        sizes = parse_mesh(FLAGS.mesh)
        for axis in MESH_AXES:
          config.mesh[axis] = sizes.get(axis, 1)
      rows = 1 << 12 if FLAGS.max_batch else None
      if FLAGS.data == "standin":
        note = sizing.standin_data(config, FLAGS.nodes, rows)
      elif FLAGS.nodes:
        raise UserError("--nodes: only with --data=standin (the real data has its own nodes)")
      else:
        note = f"{config.data.name} (real data)"
      devices = hbm = None
      if target is None:
        if config.kernels.get("attention", "auto") == "auto":
          config.kernels.attention = "xla"  # GPU's auto may be cuDNN, which XLA CPU cannot compile
        accelerator = resolve_kernels(config.kernels, backend="gpu", num_devices=jax.device_count())
        config.kernels = ml_collections.ConfigDict(dataclasses.asdict(accelerator))  # as on the target
        note += f"; kernels as on an accelerator ({', '.join(f'{k}={v}' for k, v in config.kernels.items())})"
      else:
        devices, hbm = tpu.topology_devices(target), target.hbm_bytes
    report = analyse(config, note, devices, hbm)
    if target is not None:
      report["target"] = target.label
    if FLAGS.max_batch:
      shards = report["mesh"]["data"] * report["mesh"]["fsdp"]
      tried = {config.train.batch_size: report["fits"]}

      def fits(b: int) -> bool:
        if b not in tried:
          trial = config.copy_and_resolve_references()
          trial.train.batch_size = b
          tried[b] = bool(analyse(trial, note, devices, hbm, flops=False)["fits"])
          print(f"  batch {b}: {'fits' if tried[b] else 'does not fit'}", flush=True)
        return tried[b]

      report["max_batch"], report["max_batch_first_failure"] = sizing.largest_batch(
        fits, config.train.batch_size, shards, limit=rows
      )
      report["max_batch_compiles"] = len(tried)
    print(format_report(report), flush=True)
    print(json.dumps(report), flush=True)

  run()


def main() -> None:
  from absl import app, flags

  from stjax.errors import UserError

  try:
    count = requested_devices(sys.argv[1:])
    on_tpu = "tpu" in _flag_values(sys.argv[1:], ("tpu",))
  except UserError as e:
    print(f"stjax: error: {e}", file=sys.stderr)
    sys.exit(2)
  _reexec(count, on_tpu)
  from stjax.train import cli as train_cli

  flags.DEFINE_string(
    "tpu", None, "TPU slice to compile for with the real TPU compiler: v5e:2x4, v5e-8, v5p-8, ..."
  )
  flags.DEFINE_integer("devices", None, "Simulated CPU device count (same as --topology).")
  flags.DEFINE_integer(
    "topology", None, "Target device count N of the mesh (config.mesh fills it), CPU estimate."
  )
  flags.DEFINE_string("mesh", None, "Explicit mesh, e.g. data:8,tensor:8 (other axes 1).")
  flags.DEFINE_boolean(
    "max_batch", False, "--tpu: bisect for the largest global batch that fits (many compiles)."
  )
  flags.DEFINE_integer(
    "nodes", None, "Stand-in node count (e.g. 8600: LargeST-California); default the dataset's."
  )
  flags.DEFINE_enum(
    "data", "standin", ["standin", "real"], "standin: registry shapes, no files; real: read config.data."
  )
  app.run(_main, flags_parser=train_cli.parse_flags)


if __name__ == "__main__":
  main()
