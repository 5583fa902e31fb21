r"""Re-evaluate a finished (or running) run: `python -m stjax.evaluate --workdir=DIR [--split=test]`.

Rebuilds data and model from DIR/config.json, restores the best checkpoint, evaluates the split
and prints the per-horizon table. When DIR/results.json holds that split, the numbers are compared
and any difference beyond 1e-6 (relative) is an error, so this also proves a run reproduces.
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder written by stjax.train.")
_SPLIT = flags.DEFINE_enum("split", "test", ["val", "test"], "Split to evaluate.")
flags.mark_flags_as_required(["workdir"])


def evaluate_workdir(workdir: str | pathlib.Path, split: str = "test") -> dict:
  """Metrics of the best checkpoint of `workdir` on `split` (same dict as results.json[split])."""
  from stjax.train import checkpoint
  from stjax.train.evaluation import evaluate_split
  from stjax.train.experiment import build_experiment

  config = checkpoint.load_run_config(workdir)
  exp = build_experiment(config)
  checkpoints = checkpoint.Checkpoints(workdir, keep=config.train.keep_checkpoints, read_only=True)
  state, _ = checkpoints.restore_best(exp.abstract_state)
  metrics, _ = evaluate_split(exp, state, split)
  return metrics


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
    metrics = evaluate_workdir(workdir, split)
    print(format_table(metrics, title=f"{split} split, best checkpoint of {workdir}"), flush=True)
    results_path = workdir / "results.json"
    if results_path.exists():
      differ = compare(json.loads(results_path.read_text())[split], metrics, split)
      if differ:
        raise UserError(f"{results_path}: {split} metrics not reproduced: {', '.join(differ[:5])}")
      print(f"Reproduces {results_path} ({split}).", flush=True)

  run()


if __name__ == "__main__":
  app.run(main)
