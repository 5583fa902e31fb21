"""Data given to a finished run (`stjax.evaluate --data/--windows`, `stjax.predict --input/--windows`),
read and checked against its stored facts (`stjax.data.run_data.RunData`).

- A series file in the dataset's own format (`read_series`; an ST-LLM `test.npz` alone reads as
  that split's windows): same node count (reordered by node id when both sides have ids), same
  channel count, consecutive steps of the run's step length (no gaps), finite values.
- Cut windows (`.npz`): `x` [B, T_in, N, C_in + 2] in original units, the model's input channels
  followed by the time-of-day fraction and the day of week (ST-LLM's own x layout), the calendar
  equal on every node; optional `y` [B, T_out, N, >= C_out] (its first C_out channels are scored).

Each problem is one UserError line naming the file.
"""

from __future__ import annotations

import inspect
import pathlib

import numpy as np

from stjax.data import formats
from stjax.data.dataset import Dataset
from stjax.data.formats.npz import load_npz
from stjax.data.run_data import RunData
from stjax.errors import UserError

_CALENDAR_TOLERANCE = 1e-3  # time-of-day fractions are stored rounded (ST-SSL: 5 decimals)


def read_series_input(path: str | pathlib.Path, run: RunData, start: str | None = None) -> Dataset:
  """A file of readings -> Dataset in the run's node order and channel names, checked (no gaps).

  Args:
    path: series file (.csv with a date column, .h5, .npz, an ST-LLM split .npz).
    run: the run's data facts; its reader options apply (channel names, channel lists).
    start: time of the first step, for files that store no dates (ISO, e.g. 2024-01-01T00:00).
  """
  reader, where = formats.series_reader(path, whole_folder=False)
  accepted = inspect.signature(reader).parameters
  options = {k: v for k, v in run.reader.items() if k not in ("name", "start")}
  options.update(name=where.stem, step_minutes=run.step_minutes)
  if start is not None:
    options["start"] = start
  elif "start" in accepted and not _has_dates(where):
    raise UserError(f"{where}: the file stores no dates; pass --start=<time of its first step>")
  dataset = reader(where, **{k: v for k, v in options.items() if k in accepted})
  return check_series(dataset, run, str(where))


def _has_dates(path: pathlib.Path) -> bool:
  """Whether a file that takes `start=` carries its own dates (a CSV with a leading date column)."""
  if path.suffix.lower() != ".csv":
    return False
  with open(path, encoding="utf-8-sig") as f:
    return f.readline().split(",")[0].strip().lower() == "date"


def check_series(dataset: Dataset, run: RunData, where: str) -> Dataset:
  """`dataset` with the run's node order, channel names and graph; UserError if it cannot feed it."""
  n, c = run.num_nodes, len(run.channels)
  if dataset.num_nodes != n:
    raise UserError(f"{where}: {dataset.num_nodes} nodes, but the run was trained on {n}")
  if dataset.num_channels != c:
    raise UserError(
      f"{where}: {dataset.num_channels} channel(s), but the run reads {c} ({', '.join(run.channels)})"
    )
  values = dataset.values
  if run.node_ids is not None and dataset.node_ids is not None and tuple(dataset.node_ids) != run.node_ids:
    ids = [str(i) for i in dataset.node_ids]
    unknown = sorted(set(ids) - set(run.node_ids))
    if unknown:
      raise UserError(f"{where}: node ids differ from the run's (e.g. {unknown[0]!r} is not one of them)")
    if len(set(ids)) != n:
      twice = next(i for i in ids if ids.count(i) > 1)
      raise UserError(f"{where}: node id {twice!r} appears more than once")
    values = values[:, [ids.index(i) for i in run.node_ids]]
  _check_steps(dataset, run, where)
  if not np.isfinite(values).all():
    t, node, _ = np.argwhere(~np.isfinite(values))[0]
    raise UserError(f"{where}: NaN/inf reading at step {t}, node {node}; fill it (0 marks a missing reading)")
  return dataset.replace(
    values=values, channels=run.channels, node_ids=run.node_ids, adjacency=run.adjacency, name=run.name
  )


def _check_steps(dataset: Dataset, run: RunData, where: str) -> None:
  """Consecutive steps of the run's length: from timestamps, else from the calendar features."""
  minutes = run.step_minutes
  if dataset.timestamps is not None:
    seconds = np.diff(dataset.timestamps.astype("datetime64[s]")).astype(np.int64)
    bad = np.flatnonzero(seconds != round(minutes * 60))
    if bad.size:
      i = int(bad[0])
      raise UserError(
        f"{where}: {seconds[i] / 60:g} minutes between {dataset.timestamps[i]} and "
        f"{dataset.timestamps[i + 1]}, but the run's step is {minutes:g} minutes (a gap or another "
        "sampling rate); give consecutive steps"
      )
    return
  if dataset.steps_per_day != run.steps_per_day:
    raise UserError(
      f"{where}: {dataset.steps_per_day} steps per day, but the run's data has {run.steps_per_day}"
    )
  spd = run.steps_per_day
  pos = dataset.day_of_week.astype(np.int64) * spd + np.round(dataset.time_of_day * spd).astype(np.int64)
  bad = np.flatnonzero(np.mod(np.diff(pos), 7 * spd) != 1)
  if bad.size:
    i = int(bad[0])
    raise UserError(
      f"{where}: steps {i} and {i + 1} are not one {minutes:g}-minute step apart (time of day / day "
      "of week jump: a gap); give consecutive steps"
    )


def read_windows(path: str | pathlib.Path, run: RunData, need_targets: bool = False) -> dict[str, np.ndarray]:
  """Cut windows (see the module docstring) -> {x [B, T_in, N, C_in] original units, tod [B, T_in]
  float32, dow [B, T_in] int32, and y [B, T_out, N, C_out] when the file has it}."""
  from stjax.data import paths

  path = paths.readable_file(path)
  keys = ("x", "y") if need_targets else ("x",)
  arrays = load_npz(path, keys)
  with np.load(path, allow_pickle=False) as z:
    has_y = "y" in z.files
  spec = run.spec
  x = np.asarray(arrays["x"])
  want = f"[windows, {spec.input_len}, {spec.num_nodes}, {spec.in_channels + 2}]"
  if x.ndim != 4 or x.shape[0] == 0:
    raise UserError(f"{path}: 'x' must be {want} (inputs, time of day, day of week), got shape {x.shape}")
  b, t, n, c = x.shape
  if t != spec.input_len:
    raise UserError(
      f"{path}: windows of {t} steps, but the model reads {spec.input_len} ('x' must be {want})"
    )
  if n != spec.num_nodes:
    raise UserError(f"{path}: {n} nodes, but the run was trained on {spec.num_nodes} ('x' must be {want})")
  if c != spec.in_channels + 2:
    raise UserError(
      f"{path}: {c} channels, but the model reads {spec.in_channels} input channel(s) + time of day + "
      f"day of week ('x' must be {want})"
    )
  x = x.astype(np.float32)
  if not np.isfinite(x).all():
    raise UserError(f"{path}: 'x' has NaN/inf values")
  tod, dow = x[..., -2], x[..., -1]
  if np.abs(tod - tod[:, :, :1]).max() > 0 or np.abs(dow - dow[:, :, :1]).max() > 0:
    raise UserError(f"{path}: the time-of-day / day-of-week channels differ between nodes")
  tod, dow = tod[:, :, 0], dow[:, :, 0]
  if tod.min() < 0 or tod.max() >= 1:
    raise UserError(f"{path}: time of day (channel {c - 2}) must be a fraction of the day in [0, 1)")
  if np.any((dow < 0) | (dow > 6) | (dow != np.round(dow))):
    raise UserError(f"{path}: day of week (channel {c - 1}) must hold integers 0..6")
  _check_window_calendar(tod, dow, run, path)
  out = {"x": x[..., : spec.in_channels], "tod": tod, "dow": dow.astype(np.int32)}
  if has_y:
    y = np.asarray(load_npz(path, ("y",))["y"], np.float32)
    if y.ndim != 4 or y.shape[:3] != (b, spec.output_len, n) or y.shape[3] < spec.out_channels:
      raise UserError(
        f"{path}: 'y' must be [{b}, {spec.output_len}, {n}, >= {spec.out_channels}], got shape {y.shape}"
      )
    out["y"] = y[..., : spec.out_channels]
  return out


def _check_window_calendar(tod: np.ndarray, dow: np.ndarray, run: RunData, path) -> None:
  """The steps inside each window must be the protocol's input offsets apart (no gaps)."""
  spd = run.steps_per_day
  slot = tod * spd
  if np.abs(slot - np.round(slot)).max() > _CALENDAR_TOLERANCE * spd:
    raise UserError(f"{path}: time of day is not on the run's {run.step_minutes:g}-minute grid")
  pos = dow.astype(np.int64) * spd + np.round(slot).astype(np.int64)  # [B, T_in]
  want = np.diff(np.asarray(run.protocol.input_offsets))
  bad = np.argwhere(np.mod(np.diff(pos, axis=1), 7 * spd) != want[None])
  if bad.size:
    w, i = bad[0]
    raise UserError(
      f"{path}: window {w}, steps {i} and {i + 1} are not {want[i]} step(s) of {run.step_minutes:g} "
      "minutes apart (a gap); windows must hold the protocol's input steps"
    )


class ArrayWindows:
  """Windows held as arrays, with WindowSource's interface (`len`, `batch`) for the eval pipeline.

  x [B, T_in, N, C_in] scaled, tod [B, T_in], dow [B, T_in], y [B, T_out, N, C_out] original units.
  """

  def __init__(self, split: str, x: np.ndarray, tod: np.ndarray, dow: np.ndarray, y: np.ndarray):
    self.split, self._x, self._tod, self._dow, self._y = split, x, tod, dow, y
    self.times = np.arange(len(x), dtype=np.int64)  # window order stands in for the current step

  def __len__(self) -> int:
    return len(self._x)

  def __repr__(self) -> str:
    return f"ArrayWindows({self.split}, {len(self)} windows)"

  def batch(self, indices) -> dict[str, np.ndarray]:
    idx = np.asarray(indices, np.int64)
    return {
      "x": self._x[idx],
      "tod": self._tod[idx],
      "dow": self._dow[idx],
      "y": self._y[idx],
      "index": idx.astype(np.int32),
    }
