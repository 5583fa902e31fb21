"""Self-contained run folders: the data facts a run stores when it starts, and the trained model
rebuilt from a run folder alone for `stjax.evaluate`, `stjax.predict` and `stjax.convert export-run`.

At the start of training, `save_run_data` writes run.json, scaler.npz and (with a graph)
graph.npz beside config.json (`stjax.data.run_data`): the resolved protocol, the scaler fitted on
the training windows only, the calendar step, channel names, node ids, the graph and fingerprints
of the splits. `load_run` then rebuilds the model with that scaler and protocol, never refitting,
from whatever data it is given: none (forecasting), a data file or cut windows (evaluation
without the training data), or config.data as training read it. A run folder from before these
files existed is rebuilt as before (scaler refitted on its training data), with a note on stderr.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import warnings
from typing import Any

import numpy as np
from absl import logging

from stjax.data import run_data, run_inputs
from stjax.data.missing import fill_windows
from stjax.data.run_data import RunData
from stjax.data.windows import bundle_from_dataset, fill_rule_of, nonnegative_of, read_data, reader_options
from stjax.errors import UserError
from stjax.train import checkpoint
from stjax.train.experiment import Experiment, build_experiment

IMPORT_FILE = "imported.json"  # provenance of a run folder made from a published checkpoint


def save_run_data(workdir: str | os.PathLike, exp: Experiment) -> RunData:
  """Writes the run's data facts into `workdir` (atomically), or checks the stored ones on resume.

  A workdir holding checkpoints resumes, so its stored facts must equal the data's now (a changed
  data file would change the scaler mid-run): UserError naming what differs. A fresh start (no
  checkpoint yet) replaces whatever an earlier run stored.
  """
  workdir = pathlib.Path(workdir)
  if (workdir / IMPORT_FILE).exists():
    raise UserError(
      f"--workdir {workdir}: holds an imported checkpoint ({IMPORT_FILE}); training there would start from "
      "a fresh init and replace it; use a new --workdir"
    )
  config, bundle = exp.config, exp.bundle
  split = "train and val" if bundle.protocol.scaler_rule == "global_train_val" else "train"
  source = config.data.path or config.data.name
  run = run_data.from_bundle(
    bundle,
    reader_options(config.data),
    fitted_on=f"the {split} windows of {source} (protocol {bundle.protocol.name})",
  )
  if run_data.exists(workdir):
    differ = run_data.load(workdir).differences(run)
    if not differ:
      return run
    if _has_checkpoints(workdir):
      raise UserError(
        f"--workdir {workdir}: the data differ from those the run started with ({', '.join(differ)} "
        "differ from its run.json / scaler.npz); restore the data or use a new --workdir"
      )
  run.save(workdir)
  return run


def _has_checkpoints(workdir: pathlib.Path) -> bool:
  last = workdir / "checkpoints" / "last"
  return last.is_dir() and any(p.name.isdigit() for p in last.iterdir())


@dataclasses.dataclass
class LoadedRun:
  """A run folder's model with its best checkpoint, and the data it was given."""

  experiment: Experiment
  state: Any  # TrainState of the best checkpoint
  run: RunData  # the stored data facts (an older run folder: rebuilt from its refitted data)
  same_split: bool | None  # whether the evaluated split is exactly the run's (None: not known)


def load_run(
  workdir: str | os.PathLike,
  *,
  split: str = "test",
  data: str | os.PathLike | None = None,
  windows: str | os.PathLike | None = None,
  start: str | None = None,
  need_data: bool = True,
) -> LoadedRun:
  """The best checkpoint of `workdir` with its stored scaler and protocol.

  Args:
    workdir: a run folder (stjax.train, or stjax.convert import-st-llm).
    split: the name the given data is evaluated as ("test" or "val").
    data: a series file in the dataset's format: all its windows form `split` (a test-only file).
    windows: an .npz of cut windows x [and y] (stjax.data.run_inputs): they form `split`.
    start: time of the first step of a `data` file that stores no dates.
    need_data: False builds the model with no data at all (forecasting).
  """
  workdir = pathlib.Path(workdir)
  config = checkpoint.load_run_config(workdir)
  if not run_data.exists(workdir):
    if data is not None or windows is not None:
      raise UserError(
        f"--workdir {workdir}: no {run_data.RUN_FILE} (a run from before runs stored their scaler); "
        "it can be evaluated on its own config.data only"
      )
    print(
      f"stjax: note: {workdir} has no {run_data.RUN_FILE} (an older run); refitting its scaler on its "
      "training data",
      file=sys.stderr,
    )
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", message="config.model.pretrained is empty", category=UserWarning)
      exp = build_experiment(config)
    run = run_data.from_bundle(exp.bundle, reader_options(config.data), fitted_on="refitted (an older run)")
    return LoadedRun(exp, _restore(workdir, config, exp), run, True)
  run = run_data.load(workdir)
  fill = fill_rule_of(config.data)  # inputs filled as in training
  same_split = None
  if windows is not None:
    w = run_inputs.read_windows(windows, run, need_targets=need_data)
    in_scaler = run.scaler.target(run.protocol.input_channels)
    x = in_scaler.transform(fill_windows(w["x"], fill, in_scaler.mean)).astype(np.float32)
    bundle = run.bundle({split: run_inputs.ArrayWindows(split, x, w["tod"], w["dow"], w.get("y"))})
  elif data is not None:
    dataset = run_inputs.read_series_input(data, run, start)
    times = run_data.all_window_times(dataset.num_steps, run.protocol, str(data))
    bundle = bundle_from_dataset(
      dataset, run.protocol, scaler=run.scaler, times={split: times}, fill_missing=fill
    )
    same_split = _same(run, split, dataset, times)
  elif need_data:
    bundle, same_split = _config_data_bundle(config, run, split, workdir)
  else:
    bundle = run.bundle({})
  bundle = dataclasses.replace(bundle, nonnegative=nonnegative_of(config.data))  # as the run forecast
  exp = checkpoint_experiment(config, bundle, run.num_train_windows)
  return LoadedRun(exp, _restore(workdir, config, exp), run, same_split)


def checkpoint_experiment(config, bundle, num_train_windows: int | None) -> Experiment:
  """`build_experiment` for a model whose weights come from a checkpoint, not from its init.

  The bundle's training split is dropped: the optimizer schedule only shapes optimizer state that
  inference never reads, so it is sized from `num_train_windows` (at least one batch, so that a
  model imported with fewer windows than a batch, or with none, still builds). The models'
  warning that config.model.pretrained is empty (random init) does not apply here.
  """
  if bundle is not None:
    bundle = dataclasses.replace(bundle, splits={k: v for k, v in bundle.splits.items() if k != "train"})
  windows = max(num_train_windows or 0, config.train.batch_size)
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="config.model.pretrained is empty", category=UserWarning)
    return build_experiment(config, bundle, num_train_windows=windows)


def _same(run: RunData, split: str, dataset, times: np.ndarray) -> bool:
  stored = run.splits.get(split)
  return stored is not None and stored["sha256"] == run_data.fingerprint(dataset, times, run.protocol)


def _config_data_bundle(config, run: RunData, split: str, workdir: pathlib.Path):
  """config.data read as training read it, cut by the stored protocol, scaled by the stored scaler."""
  if not (config.data.path or config.data.name):
    raise UserError(
      f"--workdir {workdir}: the run names no data (imported with a given scaler); pass --data=FILE or --windows=FILE"
    )
  try:
    dataset, protocol = read_data(config.data)
  except UserError as e:
    raise UserError(f"{e} (or evaluate without the run's data: --data=FILE or --windows=FILE)") from None
  if protocol != run.protocol:
    raise UserError(
      f"{workdir / run_data.RUN_FILE}: config.data now resolves to another protocol than the run's "
      f"({protocol.name}); the data changed since training"
    )
  dataset = run_inputs.check_series(dataset, run, config.data.path or config.data.name)
  bundle = bundle_from_dataset(
    dataset, run.protocol, scaler=run.scaler, fill_missing=fill_rule_of(config.data)
  )
  return bundle, _same(run, split, dataset, bundle.splits[split].times)


def _restore(workdir: pathlib.Path, config, exp: Experiment):
  """The best checkpoint's state. Orbax warns that read-only managers keep every step (nothing is
  deleted here anyway): those warnings are kept off the console for this."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(min(verbosity, logging.ERROR))  # absl: lower = quieter
  try:
    ckpts = checkpoint.Checkpoints(workdir, keep=config.train.keep_checkpoints, read_only=True)
    try:
      state, _ = ckpts.restore_best(exp.abstract_state)
    finally:
      ckpts.close()
  finally:
    logging.set_verbosity(verbosity)
  return state
