r"""The command line of `python -m stjax.train --config=configs/X.py[:variant]` (flags and main).

  python -m stjax.train --config=configs/quickstart.py --workdir=runs/quick
  python -m stjax.train --config=configs/st_link_metrla.py:cpu --config.train.max_steps=500

Any config field can be overridden with `--config.a.b=value`; unknown fields are refused. Without
--workdir a new timestamped folder under runs/ is used. Re-running the same command in the same
workdir resumes from its last checkpoint; a different config there is refused unless
`--config.overwrite=True`. SIGTERM or Ctrl-C saves a checkpoint at the next step boundary and exits
with 128 + the signal (143 / 130). Outputs and failures: docs/training.md.
"""

from __future__ import annotations

import datetime
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from stjax import distributed
from stjax.errors import UserError, cli_entry
from stjax.train.loop import train_and_evaluate
from stjax.train.signals import TrainingStopped

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file (configs/*.py[:variant]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (default: runs/<config>-<timestamp>).")
flags.mark_flags_as_required(["config"])


def default_workdir(config_path: str) -> str:
  name = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  return os.path.join("runs", f"{name}-{datetime.datetime.now():%Y%m%d-%H%M%S}")


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with config errors (bad file, unknown or mistyped override) as one line."""
  try:
    rest = flags.FLAGS(argv)
    _CONFIG.value.keys()  # config_flags defers file errors until first use
    return rest
  except (AttributeError, KeyError) as e:
    message = (
      f"--config: unknown field {str(e).strip(chr(34))} in an override (the config is locked; "
      "check the spelling against the config file)"
    )
  except (flags.Error, OSError, TypeError, ValueError, UserError) as e:
    message = " ".join(str(e).split())  # config_flags errors span several lines
  print(f"stjax: error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; -v 0 brings it back

  @cli_entry
  def run():
    # Multi-host hook: initialises jax.distributed only when a cluster/coordinator is configured.
    distributed.initialize()
    if not _WORKDIR.value and jax.process_count() > 1:
      raise UserError("--workdir: required when training on several hosts (all must use the same)")

    workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename)
    try:
      train_and_evaluate(_CONFIG.value, workdir)
    except TrainingStopped as e:  # SIGTERM (preemption) or Ctrl-C: saved, resumable
      print(f"stjax: {e}", file=sys.stderr, flush=True)
      sys.exit(e.exit_code)  # 128 + signal: 143 for SIGTERM, 130 for SIGINT
    print(f"Outputs in {workdir}", flush=True)

  run()


def run_main() -> None:
  app.run(main, flags_parser=parse_flags)
