"""DCRNN `metr-la.h5` / `pems-bay.h5`: a pandas HDFStore 'fixed' DataFrame, read with h5py.

pandas (`df.to_hdf(path, key)`, format='fixed') writes one HDF5 group per frame, here `/df`:

| node | content |
|---|---|
| attrs | `pandas_type='frame'`, `nblocks`, `axis0_variety='regular'`, ... |
| `axis0` | column labels = sensor ids (int64, or fixed-width bytes for string ids) |
| `axis1` | row index = timestamps as int64 nanoseconds (attrs `kind='datetime64'`, `index_class='datetime'`) |
| `block{i}_items` | the column labels held by block i |
| `block{i}_values` | [T, n_i] values of block i (stored transposed, attr `transposed=1`) |

No pandas or PyTables is needed: the arrays are plain HDF5 datasets.
"""

from __future__ import annotations

import pathlib

import h5py
import numpy as np

from stjax.data.dataset import Dataset, calendar_features
from stjax.data.formats.timeaxis import checked_step_minutes
from stjax.errors import UserError


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _labels(array: np.ndarray) -> tuple[str, ...]:
  return tuple(_text(v) for v in array.tolist())


def _frame_group(f: h5py.File, path, key: str | None) -> h5py.Group:
  frames = [k for k, g in f.items() if isinstance(g, h5py.Group) and _text(g.attrs.get("pandas_type", b"")) == "frame"]
  if key is None:
    key = "df" if "df" in frames else (frames[0] if len(frames) == 1 else None)
    if key is None:
      raise UserError(f"{path}: no single pandas frame to read (frames found: {frames or 'none'}); pass key=")
  if key not in frames:
    raise UserError(f"{path}: no pandas frame '{key}' (frames found: {frames or 'none'})")
  group = f[key]
  missing = [n for n in ("axis0", "axis1", "block0_items", "block0_values") if n not in group]
  if missing:
    raise UserError(f"{path}: frame '{key}' is missing {', '.join(missing)} (not a pandas fixed-format frame)")
  return group


def read_dcrnn_h5(path: str | pathlib.Path, key: str | None = None, name: str | None = None,
                  channel: str = "speed") -> Dataset:
  """Reads a DCRNN HDFStore file into a Dataset with values [T, N, 1] (0 = missing reading).

  Args:
    path: the `.h5` file.
    key: the frame's key in the store; default 'df', or the only frame present.
    name: dataset name (default: the file stem).
    channel: name of the single value channel.
  """
  path = pathlib.Path(path)
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise UserError(f"{path}: not a readable HDF5 file ({e})") from None
  try:
    with f:
      group = _frame_group(f, path, key)
      columns = _labels(group["axis0"][()])
      index = group["axis1"][()]
      if _text(group["axis1"].attrs.get("kind", b"")) != "datetime64":
        raise UserError(f"{path}: the frame index is not a datetime index (kind={_text(group['axis1'].attrs.get('kind', b''))!r})")
      nblocks = int(group.attrs.get("nblocks", 1))
      values = np.empty((index.shape[0], len(columns)), np.float32)
      filled = np.zeros(len(columns), bool)
      position = {c: i for i, c in enumerate(columns)}
      for b in range(nblocks):
        items = _labels(group[f"block{b}_items"][()])
        block = group[f"block{b}_values"][()]
        if block.shape != (index.shape[0], len(items)):
          raise UserError(f"{path}: block{b}_values has shape {block.shape}, expected "
                          f"({index.shape[0]}, {len(items)}) from the index and block{b}_items")
        cols = [position[i] for i in items if i in position]
        if len(cols) != len(items):
          raise UserError(f"{path}: block{b}_items names columns that are not in axis0")
        values[:, cols] = block
        filled[cols] = True
      if not filled.all():
        raise UserError(f"{path}: {int((~filled).sum())} columns of axis0 have no values block")
  except (OSError, KeyError, RuntimeError) as e:  # h5py raises these on a truncated or corrupt file.
    raise UserError(f"{path}: cannot read the HDF5 data ({e})") from None
  timestamps = index.astype(np.int64).astype("datetime64[ns]").astype("datetime64[s]")
  step_minutes = checked_step_minutes(timestamps, path)
  tod, dow = calendar_features(timestamps)
  return Dataset(name=name or path.stem, values=values[:, :, None], channels=(channel,),
                 step_minutes=step_minutes, time_of_day=tod, day_of_week=dow,
                 timestamps=timestamps, node_ids=columns)
