"""DCRNN `metr-la.h5` / `pems-bay.h5`: a pandas HDFStore 'fixed' DataFrame, read with h5py.

pandas (`df.to_hdf(path, key)`, format='fixed') writes one HDF5 group per frame, here `/df`:

| node | content |
|---|---|
| attrs | `pandas_type='frame'`, `nblocks`, `axis0_variety='regular'`, ... |
| `axis0` | column labels = sensor ids (int64, or fixed-width bytes for string ids) |
| `axis1` | row index = timestamps as int64 in the unit its `kind` attr names (below), `index_class='datetime'` |
| `block{i}_items` | the column labels held by block i |
| `block{i}_values` | [T, n_i] values of block i (stored transposed, attr `transposed=1`) |

The index `kind` is a bare `'datetime64'` (always nanoseconds) from old pandas, as in the DCRNN
release; newer pandas writes the index dtype with its unit: `'datetime64[ns]'`, `'datetime64[us]'`,
`'datetime64[ms]'` or `'datetime64[s]'` (all four read, tested with pandas 3.1). A timezone-aware
index (attr `tz`) holds UTC instants: a fixed offset (the name 'UTC', or a pickled
`datetime.timezone`, unpickled with only that class allowed) is added to give local time; named
zones are refused (their DST changes repeat or skip local hours).
`format='table'` stores (pickles its column labels) are refused with the way to re-save them.

No pandas or PyTables is needed: the arrays are plain HDF5 datasets.
"""

from __future__ import annotations

import datetime
import io
import pathlib
import pickle
import re

import h5py
import numpy as np

from stjax.data import paths
from stjax.data.dataset import Dataset, calendar_features
from stjax.data.formats.timeaxis import checked_step_minutes
from stjax.errors import UserError

_INDEX_KIND = re.compile(r"datetime64(?:\[(s|ms|us|ns)\])?")


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _labels(array: np.ndarray) -> tuple[str, ...]:
  return tuple(_text(v) for v in array.tolist())


def _array(group: h5py.Group, node: str, path) -> np.ndarray:
  """One node of the frame; UserError for the pickled object arrays PyTables writes (never unpickled)."""
  dataset = group[node]
  if _text(dataset.attrs.get("CLASS", b"")) == "VLARRAY" or dataset.dtype.kind == "O":
    raise UserError(
      f"{path}: {node} holds pickled Python objects (pandas writes these for text columns or "
      "mixed-type labels); store numbers with int or str labels"
    )
  return dataset[()]


def _frame_group(f: h5py.File, path, key: str | None) -> h5py.Group:
  kinds = {k: _text(g.attrs.get("pandas_type", b"")) for k, g in f.items() if isinstance(g, h5py.Group)}
  frames = [k for k, kind in kinds.items() if kind == "frame"]
  tables = [k for k, kind in kinds.items() if kind == "frame_table"]
  if key in tables or key is None and tables and not frames:
    raise UserError(
      f"{path}: frame '{key or tables[0]}' was written with format='table'; re-save it in pandas' "
      "default format='fixed' (df.to_hdf(path, key='df'))"
    )
  if key is None:
    key = "df" if "df" in frames else (frames[0] if len(frames) == 1 else None)
    if key is None:
      raise UserError(f"{path}: no single pandas frame to read (frames found: {frames or 'none'}); pass key=")
  if key not in frames:
    raise UserError(f"{path}: no pandas frame '{key}' (frames found: {frames or 'none'})")
  group = f[key]
  missing = [n for n in ("axis0", "axis1", "block0_items", "block0_values") if n not in group]
  if missing:
    raise UserError(
      f"{path}: frame '{key}' is missing {', '.join(missing)} (not a pandas fixed-format frame)"
    )
  return group


class _TimezoneUnpickler(pickle.Unpickler):
  """PyTables pickles a `datetime.timezone` attr; nothing but that class and timedelta may load."""

  def find_class(self, module: str, name: str):
    if module == "datetime" and name in ("timezone", "timedelta"):
      return getattr(datetime, name)
    raise pickle.UnpicklingError(f"{module}.{name}")


def _utc_offset(axis: h5py.Dataset, path) -> np.timedelta64:
  """Local time minus UTC for the frame index: 0 without a zone; UserError for a zone with DST."""
  tz = axis.attrs.get("tz")
  raw = tz if isinstance(tz, bytes) else str(tz).encode()  # np.bytes_ is bytes
  if tz is None or raw == b"UTC":
    return np.timedelta64(0, "s")
  try:
    zone = _TimezoneUnpickler(io.BytesIO(raw)).load()
  except (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
    OverflowError,
  ):
    zone = None
  if isinstance(zone, datetime.timezone):
    return np.timedelta64(int(zone.utcoffset(None).total_seconds()), "s")
  name = "a pickled tzinfo" if b"\n" in raw else raw.decode("utf-8", "replace")
  raise UserError(
    f"{path}: the frame index is in time zone {name!r}; store local times without a zone "
    "(df.index = df.index.tz_localize(None), with no repeated hour at a DST change)"
  )


def _index_unit(axis: h5py.Dataset, index: np.ndarray, path) -> str:
  """The unit of a datetime frame index ('ns' for old pandas' bare 'datetime64'); UserError otherwise."""
  kind = _text(axis.attrs.get("kind", b""))
  match = _INDEX_KIND.fullmatch(kind)
  if match is None or index.ndim != 1 or index.dtype.kind not in "iu":
    raise UserError(f"{path}: the frame index is not a datetime index (kind={kind!r}, dtype {index.dtype})")
  return match.group(1) or "ns"


def read_dcrnn_h5(
  path: str | pathlib.Path, key: str | None = None, name: str | None = None, channel: str = "speed"
) -> Dataset:
  """Reads a DCRNN HDFStore file into a Dataset with values [T, N, 1] (0 = missing reading).

  Args:
    path: the `.h5` file.
    key: the frame's key in the store; default 'df', or the only frame present.
    name: dataset name (default: the file stem).
    channel: name of the single value channel.
  """
  path = paths.readable_file(path)
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise UserError(f"{path}: not a readable HDF5 file ({e})") from None
  try:
    with f:
      group = _frame_group(f, path, key)
      columns = _labels(_array(group, "axis0", path))
      index = _array(group, "axis1", path)
      unit = _index_unit(group["axis1"], index, path)
      offset = _utc_offset(group["axis1"], path)
      nblocks = int(group.attrs.get("nblocks", 1))
      values = np.empty((index.shape[0], len(columns)), np.float32)
      filled = np.zeros(len(columns), bool)
      position = {c: i for i, c in enumerate(columns)}
      for b in range(nblocks):
        items = _labels(_array(group, f"block{b}_items", path))
        block = _array(group, f"block{b}_values", path)
        if block.dtype.kind not in "biuf":
          raise UserError(f"{path}: block{b}_values holds {block.dtype} values, not numbers")
        if block.shape != (index.shape[0], len(items)):
          raise UserError(
            f"{path}: block{b}_values has shape {block.shape}, expected "
            f"({index.shape[0]}, {len(items)}) from the index and block{b}_items"
          )
        cols = [position[i] for i in items if i in position]
        if len(cols) != len(items):
          raise UserError(f"{path}: block{b}_items names columns that are not in axis0")
        values[:, cols] = block
        filled[cols] = True
      if not filled.all():
        raise UserError(f"{path}: {int((~filled).sum())} columns of axis0 have no values block")
  except (OSError, KeyError, RuntimeError) as e:  # h5py raises these on a truncated or corrupt file.
    raise UserError(f"{path}: cannot read the HDF5 data ({e})") from None
  timestamps = index.astype(np.int64).astype(f"datetime64[{unit}]").astype("datetime64[s]") + offset
  step_minutes = checked_step_minutes(timestamps, path)
  tod, dow = calendar_features(timestamps)
  return Dataset(
    name=name or path.stem,
    values=values[:, :, None],
    channels=(channel,),
    step_minutes=step_minutes,
    time_of_day=tod,
    day_of_week=dow,
    timestamps=timestamps,
    node_ids=columns,
  )
