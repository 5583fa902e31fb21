"""NumPy `.npz` files: ST-SSL's `NAME.npz['data']` series and `adj_mx.npz['adj_mx']` graphs.

ST-SSL (Ji et al., AAAI 2023) grid datasets store `data` [T, N, 3] = inflow, outflow and the
time-of-day fraction of each step; the file has no dates, so the step length and the start come
from the registry (NYCBike1: 1 h from 2014-04-01, STResNet; NYCBike2: 30 min from 2016-07-01,
STDN). The time-of-day channel is checked against that calendar and dropped from the values.
The ASTGCN/STSGCN PEMS0X flow files use the same `data` key with channels such as
(flow, occupancy, speed) and no time-of-day channel (pass `channels=` and `tod_channel=None`).
"""

from __future__ import annotations

import pathlib
import zipfile

import numpy as np

from stjax.data import paths
from stjax.data.dataset import Dataset, calendar_features
from stjax.data.formats.timeaxis import regular_timestamps
from stjax.errors import UserError

STSSL_CHANNELS = ("inflow", "outflow", "time_of_day")
_NOT_GIVEN = object()


def load_npz(path: str | pathlib.Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
  """Loads the named arrays of an `.npz` (no pickled objects), with one-line errors."""
  path = paths.readable_file(path)
  try:
    with np.load(path, allow_pickle=False) as z:
      missing = [k for k in keys if k not in z.files]
      if missing:
        raise UserError(
          f"{path}: missing array(s) {', '.join(missing)} (has: {', '.join(z.files) or 'none'})"
        )
      return {k: z[k] for k in keys}
  except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
    raise UserError(f"{path}: not a readable .npz file ({e})") from None


def read_data_npz(
  path: str | pathlib.Path,
  step_minutes: float | None = None,
  start=None,
  channels: tuple[str, ...] = STSSL_CHANNELS,
  tod_channel: int | None | object = _NOT_GIVEN,
  name: str | None = None,
  node_ids_key: str | None = None,
) -> Dataset:
  """`NAME.npz['data']` [T, N, C] -> Dataset.

  A `time_of_day` array [T] in the file (fractions of a day, as DCRNN-style splits store it) is
  checked against the calendar, like a time-of-day channel; other arrays are ignored.

  Args:
    path: the `.npz` file.
    step_minutes, start: the calendar of step 0 and the step length (the file has no dates).
    channels: a name for each of the C channels in the file.
    tod_channel: index of a time-of-day channel to check and drop; default: the one named
      "time_of_day" if any.
    name: dataset name (default: the file stem).
    node_ids_key: an array [N] of node ids in the file (e.g. "sensor_ids"): the dataset's node
      ids, by which a larger graph is reordered and restricted to these nodes.
  """
  path = pathlib.Path(path)
  arrays = load_npz(path, ("data",) + ((node_ids_key,) if node_ids_key else ()))
  data = arrays["data"]
  if data.ndim != 3:
    raise UserError(f"{path}: 'data' must be [time, nodes, channels], got shape {data.shape}")
  node_ids = None
  if node_ids_key:
    ids = arrays[node_ids_key]
    if ids.shape != (data.shape[1],):
      raise UserError(
        f"{path}: '{node_ids_key}' has shape {ids.shape}, expected one id per node ({data.shape[1]},)"
      )
    node_ids = tuple(str(i) for i in ids.tolist())
  channels = tuple(channels)
  if data.shape[2] != len(channels):
    raise UserError(
      f"{path}: 'data' has {data.shape[2]} channels but {len(channels)} names were given ({channels})"
    )
  if tod_channel is _NOT_GIVEN:
    tod_channel = channels.index("time_of_day") if "time_of_day" in channels else None
  timestamps = regular_timestamps(data.shape[0], step_minutes, start, path)
  tod, dow = calendar_features(timestamps)
  calendar = f"step_minutes={step_minutes} from start={start}"
  if tod_channel is not None:
    stored = data[:, :, tod_channel].astype(np.float64).max(axis=1)  # the same on every node
    _check_time_of_day(path, stored, tod, f"time-of-day channel {tod_channel} ({calendar})")
  stored_tod = _optional_array(path, "time_of_day")
  if stored_tod is not None:
    _check_time_of_day(path, stored_tod, tod, f"array 'time_of_day' ({calendar})")
  keep = [c for c in range(data.shape[2]) if c != tod_channel]
  return Dataset(
    name=name or path.stem,
    values=data[:, :, keep].astype(np.float32),
    channels=tuple(channels[c] for c in keep),
    step_minutes=float(step_minutes),
    time_of_day=tod,
    day_of_week=dow,
    timestamps=timestamps,
    node_ids=node_ids,
  )


def _optional_array(path: pathlib.Path, key: str) -> np.ndarray | None:
  with np.load(path, allow_pickle=False) as z:
    return z[key] if key in z.files else None


def _check_time_of_day(path: pathlib.Path, stored: np.ndarray, tod: np.ndarray, what: str) -> None:
  """UserError when a stored time-of-day fraction [T] disagrees with the calendar's `tod` [T]."""
  if stored.shape != tod.shape:
    raise UserError(f"{path}: {what} has shape {stored.shape}, expected {tod.shape}")
  error = np.abs(stored.astype(np.float64) - tod)
  error = np.minimum(error, 1.0 - error)  # the files round the fraction; one step is >= 1/288 of a day
  if error.max() > 1e-3:
    t = int(np.flatnonzero(error > 1e-3)[0])  # the first step that disagrees
    raise UserError(f"{path}: {what} reads {stored[t]:.5f} at step {t}, but the calendar gives {tod[t]:.5f}")


def read_adj_npz(path: str | pathlib.Path) -> np.ndarray:
  """ST-SSL `adj_mx.npz['adj_mx']` -> [N, N] float32."""
  adj = load_npz(path, ("adj_mx",))["adj_mx"]
  if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
    raise UserError(f"{path}: 'adj_mx' must be a square matrix, got shape {adj.shape}")
  return adj.astype(np.float32)
