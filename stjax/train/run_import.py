"""The pieces of an imported run folder: scaler and data facts, the checked state, the writing.

An importer (`stjax.train.run_convert`) gets its scaler either given (`given_scaler_run`; flag
values parsed by `parse_values`) or fitted on the training split of the data the checkpoint was
trained on (`fitted_run`, `training_bounds` for STH-SepNet's output clamp); `write_imported_run`
puts the checkpoint's variables into a fresh TrainState, checked leaf by leaf against the model
built from the config (`with_variables`), and writes config.json, run.json, imported.json and
checkpoints/best into a temporary folder renamed at the end.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import numpy as np

from stjax.convert import checkpoint_io
from stjax.convert.hf_common import get_path, leaf_paths, plain
from stjax.data import registry, run_data
from stjax.data.download import sha256_file
from stjax.data.protocols import get_protocol
from stjax.data.windows import DataBundle, Scaler, bundle_from_dataset, read_data, reader_options
from stjax.errors import UserError
from stjax.train import checkpoint
from stjax.train.run_folder import IMPORT_FILE, checkpoint_experiment


def check_scaler_source(mean, std, data) -> None:
  given = mean is not None or std is not None
  if given == (data is not None):
    raise UserError("--scaler-mean/--scaler-std or --data: give the scaler, or the data it was fitted on")
  if given and (mean is None or std is None):
    raise UserError("--scaler-mean and --scaler-std: give both")


def per_node(values, n: int, flag: str) -> np.ndarray:
  a = np.asarray(values, np.float64).reshape(-1)
  if a.size not in (1, n):
    raise UserError(f"{flag}: {a.size} values; give one, or one per node ({n})")
  if not np.isfinite(a).all() or (flag == "--scaler-std" and not (a > 0).all()):
    raise UserError(f"{flag}: values must be finite{' and > 0' if flag == '--scaler-std' else ''}")
  return a


def parse_values(text: str, flag: str) -> list[float]:
  """A flag's numbers: `1.5`, `1,2,3`, or a .npy / .json (list) / text file holding them."""
  try:
    return [float(v) for v in text.split(",")]
  except ValueError:
    pass
  path = pathlib.Path(text).expanduser()
  if not path.is_file():
    raise UserError(f"{flag}: {text!r} is neither numbers (comma-separated) nor a file")
  try:
    if path.suffix == ".npy":
      values = np.load(path, allow_pickle=False)
    elif path.suffix == ".json":
      values = json.loads(path.read_text())
    else:
      values = path.read_text().replace(",", " ").split()
    return [float(v) for v in np.asarray(values, np.float64).reshape(-1)]
  except (OSError, ValueError, TypeError, UnicodeDecodeError) as e:
    raise UserError(f"{flag}: {path}: expected numbers ({type(e).__name__})") from None


def given_scaler_run(
  config, name: str, step_minutes: float, num_nodes: int, mean, std, fitted_on: str
) -> run_data.RunData:
  """RunData of one value channel with a given scaler ([1 or N] values each), no data known."""
  config.data.name = ""  # no data known: evaluate needs --data or --windows
  steps_per_day = 24 * 60 / step_minutes
  if abs(steps_per_day - round(steps_per_day)) > 1e-9:
    raise UserError(f"--step-minutes: {step_minutes:g} minutes does not divide a day")
  protocol = get_protocol(config.data.protocol).resolve(
    round(steps_per_day), config.data.input_len, config.data.output_len
  )
  return run_data.RunData(
    name=name,
    channels=("value",),
    step_minutes=step_minutes,
    num_nodes=num_nodes,
    node_ids=None,
    protocol=protocol,
    scaler=Scaler(np.asarray(mean, np.float32).reshape(-1, 1), np.asarray(std, np.float32).reshape(-1, 1)),
    adjacency=None,
    num_train_windows=None,
    splits={},
    reader={},
    fitted_on=fitted_on,
  )


def fitted_run(config, data: str, check) -> tuple[run_data.RunData, DataBundle]:
  """config.data pointed at `data` (registry name or path), read and cut by config.data.protocol,
  `check(spec)`ed; the RunData with the scaler fitted on the training split only, and the bundle."""
  if data in registry.DATASETS:
    config.data.name = data
  else:
    path = pathlib.Path(data).expanduser().absolute()
    config.data.name, config.data.path = path.stem, str(path)
  dataset, protocol = read_data(config.data)
  bundle = bundle_from_dataset(dataset, protocol)  # fitted on the training split only
  check(bundle.spec)
  part = (
    "rows" if protocol.split_rule == "tslib_borders" and protocol.scaler_rule == "per_node" else "windows"
  )
  fitted_on = f"the train {part} of {data} (protocol {protocol.name})"
  return run_data.from_bundle(bundle, reader_options(config.data), fitted_on=fitted_on), bundle


def training_bounds(bundle: DataBundle) -> tuple[np.ndarray, np.ndarray]:
  """Per-node min and max [N] of the scaled rows the scaler was fitted on (one channel): the
  released run_main's `min_values` / `max_values` (np.min/max of the scaled train data_x)."""
  ds, p = bundle.dataset, bundle.protocol
  rows = p.scaler_weights(ds.num_steps, p.split_times(ds.num_steps)) > 0
  scaled = bundle.scaler.transform(np.asarray(ds.values[rows], np.float64))[..., 0]  # [T_train, N]
  return scaled.min(0), scaled.max(0)


def write_imported_run(output, config, run, params: dict, model_state: dict, source, provenance: dict):
  """Writes the run folder of an imported checkpoint (see the module docstring), atomically."""
  exp = checkpoint_experiment(config, run.bundle({}), run.num_train_windows)
  state = with_variables(exp, params, model_state, source)
  provenance = {
    "source": str(pathlib.Path(source).expanduser().absolute()),
    "sha256": sha256_file(source),
    **provenance,
  }
  with checkpoint_io.atomic_directory(output) as tmp:
    text = json.dumps(checkpoint.config_to_dict(config), indent=2, sort_keys=True) + "\n"
    (tmp / "config.json").write_text(text)
    run.save(tmp)
    (tmp / IMPORT_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    ckpts = checkpoint.Checkpoints(tmp, keep=1)
    try:
      ckpts.save_best(0, state, {"step": 0, "imported_from": provenance["source"]})
    finally:
      ckpts.close()
  return pathlib.Path(output).expanduser().absolute()


def check_tree(want: dict, got: dict, source, where: str) -> None:
  want_paths, got_paths = set(leaf_paths(want)), set(leaf_paths(got))
  for p in sorted(want_paths ^ got_paths):
    side = "missing from" if p in want_paths else "unknown to"
    raise UserError(f"{source}: {where}{'/'.join(p)} is {side} the stjax model built from its config")
  for p in sorted(want_paths):
    if np.shape(get_path(want, p)) != np.shape(get_path(got, p)):
      raise UserError(
        f"{source}: {where}{'/'.join(p)} has shape {np.shape(get_path(got, p))}, "
        f"the model {np.shape(get_path(want, p))}"
      )


def with_variables(exp, params: dict, model_state: dict, source) -> Any:
  """A fresh TrainState of `exp` holding `params` and the collections of `model_state` (checked
  leaf by leaf; other collections keep their init), optimizer state re-made."""
  state = exp.init_state()
  check_tree(plain(state.params), plain(params), source, "")
  collections = dict(state.model_state)
  for name, tree in model_state.items():
    if name not in collections:
      raise UserError(f"{source}: collection {name!r} is unknown to the stjax model built from its config")
    check_tree(plain(collections[name]), plain(tree), source, f"{name}/")
    collections[name] = jax.tree.map(lambda a: np.asarray(a, np.float32), plain(tree))
  f32 = lambda tree: jax.tree.map(lambda a: np.asarray(a, np.float32), plain(tree))
  with exp.context():
    new = jax.device_put(f32(params), exp.state_shardings.params)
    collections = jax.device_put(collections, exp.state_shardings.model_state)
    opt_state = jax.jit(exp.tx.init, out_shardings=exp.state_shardings.opt_state)(new)
  return state.replace(params=new, opt_state=opt_state, model_state=collections)
