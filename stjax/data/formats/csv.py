"""CSV files: node-column series, N x N adjacency matrices and edge lists.

- Series (STH-SepNet / Time-Series-Library style): header `date,<id_1>,...,<id_N>`, one row per
  step. Without a `date` column (T-GCN's `los_speed.csv`: header = sensor ids only) the step length
  and the start come from options (`step_minutes=`, `start=`).
- Matrix: STH-SepNet `*_adj.csv` (a header row `0,1,...,N-1` then N rows of N numbers) or a bare
  N x N matrix (T-GCN `los_adj.csv`, CCRNN `dis_bb.csv`).
- Edge list: `from,to,distance|cost` with or without that header (DCRNN `distances_bay_2017.csv`,
  ASTGCN `PEMS0X.csv`, STH-SepNet `Bike.csv`), weighted with DCRNN's Gaussian kernel.
"""

from __future__ import annotations

import csv
import pathlib
from typing import Sequence

import numpy as np

from stjax.data import paths
from stjax.data.dataset import Dataset, calendar_features
from stjax.data.formats.gaussian import gaussian_kernel_adjacency
from stjax.data.formats.timeaxis import checked_step_minutes, regular_timestamps
from stjax.errors import UserError


def _open(path: pathlib.Path):
  return open(paths.readable_file(path), newline="", encoding="utf-8-sig")


def _is_number(token: str) -> bool:
  try:
    float(token)
    return True
  except ValueError:
    return False


def _layout(path: pathlib.Path) -> tuple[str, bool]:
  """(kind, has_header): kind is 'edges', 'matrix' or 'series'."""
  with _open(path) as f:
    reader = csv.reader(f)
    first = next(reader, None)
    if first is None:
      raise UserError(f"{path}: empty file")
    rows = sum(1 for row in reader if row)  # rows after the first
  first = [h.strip() for h in first]
  if len(first) >= 3 and [h.lower() for h in first[:2]] == ["from", "to"]:
    return "edges", True
  if all(_is_number(h) for h in first):
    if first == [str(i) for i in range(len(first))] and rows == len(first):
      return "matrix", True  # index header 0..N-1, then N rows
    if rows + 1 == len(first):
      return "matrix", False  # bare N x N
    if len(first) == 3:
      return "edges", False  # bare from,to,distance rows
  return "series", True


def sniff_csv(path: str | pathlib.Path) -> str:
  """'edges', 'matrix' or 'series', from the header and the shape of the file."""
  return _layout(pathlib.Path(path))[0]


def _numbers(path: pathlib.Path, skiprows: int, usecols=None) -> np.ndarray:
  """[rows, cols] float64; empty fields become NaN; anything else non-numeric is an error."""
  kwargs = dict(delimiter=",", skiprows=skiprows, usecols=usecols, ndmin=2, encoding="utf-8-sig")
  try:
    return np.loadtxt(path, dtype=np.float64, **kwargs)
  except ValueError:
    pass
  try:
    text = np.char.strip(np.loadtxt(path, dtype=str, **kwargs))
  except ValueError as e:  # ragged rows
    raise UserError(f"{path}: malformed CSV ({e})") from None
  text[text == ""] = "nan"
  for r, row in enumerate(text):
    for c, token in enumerate(row):
      if not _is_number(token):
        raise UserError(f"{path}: row {r + skiprows + 1}, column {c + 1}: '{token}' is not a number")
  return text.astype(np.float64)


def read_node_csv(
  path: str | pathlib.Path,
  step_minutes: float | None = None,
  start=None,
  name: str | None = None,
  channel: str = "value",
) -> Dataset:
  """Node-column CSV -> Dataset [T, N, 1] with node ids from the header."""
  path = pathlib.Path(path)
  with _open(path) as f:
    header = [h.strip() for h in next(csv.reader(f), [])]
  if not header:
    raise UserError(f"{path}: empty file")
  has_date = header[0].lower() == "date"
  ids = tuple(header[1:] if has_date else header)
  if not ids:
    raise UserError(f"{path}: no node columns")
  values = _numbers(path, 1, range(1, len(header)) if has_date else None)
  if values.shape[1] != len(ids):
    raise UserError(f"{path}: {values.shape[1]} value columns but {len(ids)} header names")
  if has_date:
    dates = np.loadtxt(path, delimiter=",", skiprows=1, usecols=0, dtype=str, ndmin=1, encoding="utf-8-sig")
    try:
      timestamps = np.array(np.char.strip(dates), dtype="datetime64[s]")
    except ValueError as e:
      raise UserError(f"{path}: 'date' column: {e}") from None
    median_step = checked_step_minutes(timestamps, path)
    step_minutes = median_step if step_minutes is None else step_minutes
  else:
    timestamps = regular_timestamps(values.shape[0], step_minutes, start, path)
  tod, dow = calendar_features(timestamps)
  return Dataset(
    name=name or path.stem,
    values=values[:, :, None].astype(np.float32),
    channels=(channel,),
    step_minutes=float(step_minutes),
    time_of_day=tod,
    day_of_week=dow,
    timestamps=timestamps,
    node_ids=ids,
  )


def read_matrix_csv(path: str | pathlib.Path) -> np.ndarray:
  """`*_adj.csv` (index header) or bare N x N CSV -> [N, N] float32."""
  path = pathlib.Path(path)
  kind, has_header = _layout(path)
  if kind != "matrix":
    raise UserError(
      f"{path}: not an N x N matrix CSV (it looks like {'an edge list' if kind == 'edges' else 'a series'})"
    )
  matrix = _numbers(path, 1 if has_header else 0)
  return matrix.astype(np.float32)


def read_node_ids(source: str | pathlib.Path | Sequence) -> tuple[str, ...]:
  """Node ids from a sequence or a text file (one per line, or comma-separated like DCRNN's)."""
  if isinstance(source, (str, pathlib.Path)):
    path = paths.readable_file(source, "node-id file")
    try:
      text = path.read_text(encoding="utf-8").replace(",", "\n").split()
    except UnicodeDecodeError as e:
      raise UserError(f"{path}: not a text file of node ids ({e.reason} at byte {e.start})") from None
    return tuple(t.strip() for t in text if t.strip())
  return tuple(str(i) for i in source)


def read_edge_csv(
  path: str | pathlib.Path,
  num_nodes: int | None = None,
  node_ids: str | pathlib.Path | Sequence | None = None,
) -> np.ndarray:
  """Edge-list CSV `from,to,distance|cost` -> Gaussian-kernel adjacency [N, N] float32.

  Node ids map to rows: through `node_ids` when given (edges touching other ids are skipped, as
  DCRNN's gen_adj_mx does), else through a node-order file beside the CSV with the same stem
  (`PEMS03.txt` for `PEMS03.csv`), else the ids must be the integers 0..N-1 (N = num_nodes, or
  the largest id + 1).
  """
  path = pathlib.Path(path)
  with _open(path) as f:
    rows = [[t.strip() for t in r] for r in csv.reader(f) if r]
  if rows and [t.lower() for t in rows[0][:2]] == ["from", "to"]:
    rows = rows[1:]
  if not rows or any(len(r) != 3 for r in rows):
    raise UserError(f"{path}: an edge list needs 3 columns (from, to, distance) on every row")
  src, dst, dist = zip(*rows)
  try:
    distance = np.array(dist, np.float64)
  except ValueError:
    raise UserError(f"{path}: the distance column has non-numbers") from None
  sibling = path.with_suffix(".txt")
  if node_ids is None and sibling.is_file():
    node_ids = sibling
  if node_ids is not None:
    ids = read_node_ids(node_ids)
    if num_nodes is not None and num_nodes != len(ids):
      raise UserError(f"{path}: num_nodes={num_nodes} but {len(ids)} node ids were given")
    index = {s: i for i, s in enumerate(ids)}
    keep = np.array([a in index and b in index for a, b in zip(src, dst)])
    if not keep.any():
      raise UserError(f"{path}: no edge joins two of the {len(ids)} given node ids")
    s = np.array([index[a] for a, k in zip(src, keep) if k])
    d = np.array([index[b] for b, k in zip(dst, keep) if k])
    return gaussian_kernel_adjacency(s, d, distance[keep], len(ids), name=str(path))
  try:
    s, d = np.array(src, np.int64), np.array(dst, np.int64)
  except ValueError:
    raise UserError(
      f"{path}: node ids are not integers 0..N-1; pass node_ids= (or put {sibling.name} beside it)"
    ) from None
  if num_nodes is None:
    num_nodes = int(max(s.max(), d.max())) + 1
    distinct = len(np.union1d(s, d))
    if num_nodes > 2 * distinct:  # ids like 400001 are sensor ids, not row numbers
      raise UserError(
        f"{path}: node ids do not look like 0..N-1 ({distinct} distinct ids, largest "
        f"{num_nodes - 1}); pass node_ids= (or num_nodes=)"
      )
  n = num_nodes
  return gaussian_kernel_adjacency(s, d, distance, n, name=str(path))
