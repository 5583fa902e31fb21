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
) -> Dataset:
  """`NAME.npz['data']` [T, N, C] -> Dataset.

  Args:
    path: the `.npz` file.
    step_minutes, start: the calendar of step 0 and the step length (the file has no dates).
    channels: a name for each of the C channels in the file.
    tod_channel: index of a time-of-day channel to check and drop; default: the one named
      "time_of_day" if any.
    name: dataset name (default: the file stem).
  """
  path = pathlib.Path(path)
  data = load_npz(path, ("data",))["data"]
  if data.ndim != 3:
    raise UserError(f"{path}: 'data' must be [time, nodes, channels], got shape {data.shape}")
  channels = tuple(channels)
  if data.shape[2] != len(channels):
    raise UserError(
      f"{path}: 'data' has {data.shape[2]} channels but {len(channels)} names were given ({channels})"
    )
  if tod_channel is _NOT_GIVEN:
    tod_channel = channels.index("time_of_day") if "time_of_day" in channels else None
  timestamps = regular_timestamps(data.shape[0], step_minutes, start, path)
  tod, dow = calendar_features(timestamps)
  if tod_channel is not None:
    stored = data[:, :, tod_channel].astype(np.float64)
    # The files round the fraction to 5 decimals; one step is >= 1/288 of a day.
    error = np.abs(stored - tod[:, None])
    error = np.minimum(error, 1.0 - error)
    if error.max() > 1e-3:
      t = int(np.argmax(error.max(axis=1)))
      raise UserError(
        f"{path}: time-of-day channel {tod_channel} reads {stored[t].max():.5f} at step {t}, "
        f"but step_minutes={step_minutes} from start={start} gives {tod[t]:.5f}"
      )
  keep = [c for c in range(data.shape[2]) if c != tod_channel]
  return Dataset(
    name=name or path.stem,
    values=data[:, :, keep].astype(np.float32),
    channels=tuple(channels[c] for c in keep),
    step_minutes=float(step_minutes),
    time_of_day=tod,
    day_of_week=dow,
    timestamps=timestamps,
  )


def read_adj_npz(path: str | pathlib.Path) -> np.ndarray:
  """ST-SSL `adj_mx.npz['adj_mx']` -> [N, N] float32."""
  adj = load_npz(path, ("adj_mx",))["adj_mx"]
  if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
    raise UserError(f"{path}: 'adj_mx' must be a square matrix, got shape {adj.shape}")
  return adj.astype(np.float32)
