r"""Re-evaluate a finished (or running) run from its folder.

  python -m stjax.evaluate --workdir=DIR [--split=test]              # config.data, as training read it
  python -m stjax.evaluate --workdir=DIR --data=test.csv             # every window of a data file
  python -m stjax.evaluate --workdir=DIR --windows=windows.npz       # cut windows x and y

Rebuilds the model from DIR/config.json with the scaler and protocol the run stored (run.json,
scaler.npz: nothing is refitted, no training data is read), restores the best checkpoint,
evaluates and prints the per-horizon table. When the evaluated windows are exactly the run's
split (fingerprint in run.json) and DIR/results.json holds that split, the numbers are compared and
any difference beyond 1e-6 (relative) is an error, so this also proves a run reproduces.
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder written by stjax.train (or stjax.convert).")
_SPLIT = flags.DEFINE_enum("split", "test", ["val", "test"], "Split to evaluate (or to name the given data).")
_DATA = flags.DEFINE_string(
  "data",
  None,
  "A series file in the dataset's format; all its windows are evaluated (e.g. the test part only).",
)
_WINDOWS = flags.DEFINE_string(
  "windows", None, ".npz of cut windows: x [B, T_in, N, C_in + 2] (inputs, time of day, day of week), y."
)
_START = flags.DEFINE_string("start", None, "Time of the first step of a --data file that stores no dates.")
flags.mark_flags_as_required(["workdir"])


def evaluate_workdir(
  workdir: str | pathlib.Path,
  split: str = "test",
  data: str | None = None,
  windows: str | None = None,
  start: str | None = None,
) -> dict:
  """Metrics of the best checkpoint of `workdir` on `split` (same dict as results.json[split])."""
  return _evaluate(workdir, split, data, windows, start)[0]


def _evaluate(workdir, split, data, windows, start) -> tuple[dict, bool | None]:
  """(metrics, whether the windows are exactly the run's split; None when not known)."""
  from stjax.errors import UserError
  from stjax.train.evaluation import evaluate_split
  from stjax.train.run_folder import load_run

  if data is not None and windows is not None:
    raise UserError("--data and --windows: give one of them")
  loaded = load_run(workdir, split=split, data=data, windows=windows, start=start)
  metrics, _ = evaluate_split(loaded.experiment, loaded.state, split)
  return metrics, loaded.same_split


def compare(expected: dict, got: dict, prefix: str = "") -> list[str]:
  """Paths where two results trees differ by more than 1e-6 relative (NaN equals NaN)."""
  import math

  if isinstance(expected, dict):
    out = []
    for k in expected:
      out += compare(expected[k], got.get(k) if isinstance(got, dict) else None, f"{prefix}.{k}")
    return out
  if isinstance(expected, list):
    if not isinstance(got, list) or len(got) != len(expected):
      return [prefix]
    return [d for i, (a, b) in enumerate(zip(expected, got)) for d in compare(a, b, f"{prefix}[{i}]")]
  if isinstance(expected, float):
    if not isinstance(got, (int, float)):
      return [prefix]
    if math.isnan(expected) and math.isnan(got):
      return []
    return (
      [] if math.isclose(expected, got, rel_tol=1e-6, abs_tol=1e-9) else [f"{prefix} ({expected} != {got})"]
    )
  return [] if expected == got else [prefix]


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from stjax import distributed
  from stjax.errors import UserError, cli_entry
  from stjax.metrics import format_table

  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)

  @cli_entry
  def run():
    distributed.initialize()
    workdir, split = pathlib.Path(_WORKDIR.value), _SPLIT.value
    metrics, same_split = _evaluate(workdir, split, _DATA.value, _WINDOWS.value, _START.value)
    source = _DATA.value or _WINDOWS.value or f"{split} split"
    print(format_table(metrics, title=f"{source}, best checkpoint of {workdir}"), flush=True)
    results_path = workdir / "results.json"
    if results_path.exists() and not same_split:
      print(f"Not the run's {split} windows: not compared with {results_path}.", flush=True)
    elif results_path.exists():
      differ = compare(json.loads(results_path.read_text())[split], metrics, split)
      if differ:
        raise UserError(f"{results_path}: {split} metrics not reproduced: {', '.join(differ[:5])}")
      print(f"Reproduces {results_path} ({split}).", flush=True)

  run()


if __name__ == "__main__":
  app.run(main)
