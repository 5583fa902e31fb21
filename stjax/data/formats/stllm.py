"""ST-LLM split folders: `{train,val,test}.npz`, each with stride-1 windows `x` and `y`.

`x`: [S, T_in, N, 3] = (value, time-of-day fraction, day-of-week 0..6); `y`: [S, T_out, N, >=1]
whose channel 0 holds the T_out values after the window. Window s+1 starts one step after window
s, and each split's first window starts one step after the previous split's last window (the
windows were cut from one series, then split by count). The reader rebuilds that one series
[T, N, 1] (T = S_total + T_in + T_out - 1), checking every overlap, so protocols can cut it again;
any mismatch names the file.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from stjax.data import paths
from stjax.data.dataset import Dataset
from stjax.data.formats.npz import load_npz
from stjax.errors import UserError

SPLITS = ("train", "val", "test")


def is_stllm_folder(path: pathlib.Path) -> bool:
  return path.is_dir() and all((path / f"{s}.npz").is_file() for s in SPLITS)


@dataclasses.dataclass
class _Part:
  values: np.ndarray  # [S + T_in + T_out - 1, N]
  tod: np.ndarray  # [S + T_in - 1]
  dow: np.ndarray  # [S + T_in - 1]
  input_len: int
  output_len: int


def _read_split(path: pathlib.Path) -> _Part:
  arrays = load_npz(path, ("x", "y"))
  x, y = arrays["x"], arrays["y"]
  if x.ndim != 4 or x.shape[3] < 3:
    raise UserError(f"{path}: 'x' must be [samples, steps, nodes, 3 (value, tod, dow)], got shape {x.shape}")
  if y.ndim != 4 or y.shape[0] != x.shape[0] or y.shape[2] != x.shape[2] or y.shape[3] < 1:
    raise UserError(f"{path}: 'y' must be [{x.shape[0]}, steps, {x.shape[2]}, >=1], got shape {y.shape}")
  samples = x.shape[0]
  windows = np.concatenate([x[..., 0], y[..., 0]], axis=1)  # [S, T_in + T_out, N]
  values = np.concatenate([windows[:, 0], windows[-1, 1:]], axis=0)
  for k in range(1, windows.shape[1]):  # window s, step k must be series[s + k]
    same = np.all(
      (windows[:, k] == values[k : k + samples])
      | (np.isnan(windows[:, k]) & np.isnan(values[k : k + samples])),
      axis=-1,
    )
    if not same.all():
      s = int(np.argmin(same))
      raise UserError(
        f"{path}: windows are not consecutive stride-1 windows of one series (window {s}, "
        f"step {k} differs from window {s + k}, step 0)"
      )
  calendar = []
  for c, what in ((1, "time of day"), (2, "day of week")):
    ch = np.concatenate([x[:, 0, :, c], x[-1, 1:, :, c]], axis=0)  # [S + T_in - 1, N]
    if not np.all(ch == ch[:, :1]):
      raise UserError(f"{path}: x channel {c} ({what}) differs between nodes")
    calendar.append(ch[:, 0])
  return _Part(values, calendar[0], calendar[1], x.shape[1], y.shape[1])


def _join(first: np.ndarray, second: np.ndarray, overlap: int, what: str, file, prev) -> np.ndarray:
  if overlap > 0 and not np.array_equal(first[-overlap:], second[:overlap], equal_nan=True):
    raise UserError(
      f"{file}: its first windows do not continue the last windows of {prev.name} ({what} "
      "differ); the splits are not consecutive windows of one series"
    )
  return np.concatenate([first, second[overlap:]], axis=0)


def read_stllm_folder(path: str | pathlib.Path, name: str | None = None, channel: str = "value") -> Dataset:
  """`{train,val,test}.npz` folder -> Dataset [T, N, 1]; tod/dow from x channels 1 and 2."""
  path = paths.existing(path)
  if not (path.is_dir() and all(paths.present(path / f"{s}.npz") for s in SPLITS)):
    raise UserError(f"{path}: not an ST-LLM split folder (needs train.npz, val.npz and test.npz)")
  files = [paths.readable_file(path / f"{s}.npz") for s in SPLITS]
  first = _read_split(files[0])
  values, tod, dow = first.values, first.tod, first.dow
  for prev, file in zip(files, files[1:]):
    part = _read_split(file)
    if part.values.shape[1] != values.shape[1]:
      raise UserError(f"{file}: {part.values.shape[1]} nodes, but {files[0].name} has {values.shape[1]}")
    if (part.input_len, part.output_len) != (first.input_len, first.output_len):
      raise UserError(
        f"{file}: windows are {part.input_len} -> {part.output_len} steps, but "
        f"{first.input_len} -> {first.output_len} in {files[0].name}"
      )
    values = _join(values, part.values, first.input_len + first.output_len - 1, "values", file, prev)
    tod = _join(tod, part.tod, first.input_len - 1, "time of day", file, prev)
    dow = _join(dow, part.dow, first.input_len - 1, "day of week", file, prev)
  return _dataset(values, tod, dow, first.output_len, files[0], name or path.name, channel)


def read_stllm_split(path: str | pathlib.Path, name: str | None = None, channel: str = "value") -> Dataset:
  """One `{train,val,test}.npz` file alone -> Dataset [S + T_in + T_out - 1, N, 1] of its windows."""
  path = paths.readable_file(path)
  part = _read_split(path)
  return _dataset(part.values, part.tod, part.dow, part.output_len, path, name or path.stem, channel)


def _dataset(values, tod, dow, output_len: int, where, name: str, channel: str) -> Dataset:
  """The series with its calendar; the last T_out steps have values (from y) but no x calendar:
  the calendar is continued over them."""
  step = np.median(np.mod(np.diff(tod.astype(np.float64)), 1.0))
  if not step > 0:
    raise UserError(f"{where}: cannot infer the step length from the time-of-day channel")
  steps_per_day = int(round(1.0 / step))
  pos = np.round(tod[-1] * steps_per_day) + np.arange(1, output_len + 1)
  tod = np.concatenate([tod, (pos % steps_per_day) / steps_per_day])
  dow = np.concatenate([dow, (dow[-1] + pos // steps_per_day) % 7])
  if np.any((dow < 0) | (dow > 6) | (dow != np.round(dow))):
    raise UserError(f"{where}: x channel 2 (day of week) must hold integers 0..6")
  return Dataset(
    name=name,
    values=values[:, :, None].astype(np.float32),
    channels=(channel,),
    step_minutes=24 * 60 / steps_per_day,
    time_of_day=tod.astype(np.float32),
    day_of_week=dow.astype(np.int32),
  )
