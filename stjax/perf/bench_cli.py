"""`python -m stjax.bench`: the flags, the printed markdown tables and the last-line JSON object.

`main` runs `stjax.perf.bench.run` with the flag values, prints the op-time profile tables when
`--profile_dir` is given, then one markdown row (`COLUMNS`) and, as the LAST line, the result as
JSON; `cli_main` defines the flags and runs `main` under absl with one-line user errors.
"""

from __future__ import annotations

import json

from stjax.errors import UserError
from stjax.tables import markdown_table

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

  from stjax.perf.bench import run  # late: bench imports this module

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
