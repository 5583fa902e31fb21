"""File readers: one per format, and two dispatchers that pick the reader from the file.

`read_series(path, **options) -> Dataset`:
  - `*.h5`: DCRNN pandas HDFStore frame (`key=`, `name=`, `channel=`).
  - a folder with `{train,val,test}.npz`, or one of those files: ST-LLM split folder (`name=`, `channel=`);
    an `.npz` with `x` and `y` but no such siblings: that split's windows alone.
  - `*.npz` with `data`: ST-SSL / PEMS0X arrays (`step_minutes=`, `start=`, `channels=`, `tod_channel=`, `name=`).
  - `*.csv`: node columns, with a `date` column or with `step_minutes=` and `start=` (`name=`, `channel=`).
`read_graph(path, num_nodes=None, node_ids=None) -> [N, N] float32`:
  - `*.pkl`: DCRNN `adj_mx.pkl` (restricted unpickler); `*.npz`: `adj_mx`;
  - `*.csv`: N x N matrix (with or without an index header) or edge list (Gaussian kernel).
"""

from __future__ import annotations

import pathlib
from typing import Callable, Sequence

import numpy as np

from stjax.data import paths
from stjax.data.dataset import Dataset
from stjax.data.formats.csv import read_edge_csv, read_matrix_csv, read_node_csv, read_node_ids, sniff_csv
from stjax.data.formats.dcrnn_h5 import read_dcrnn_h5
from stjax.data.formats.npz import load_npz, read_adj_npz, read_data_npz
from stjax.data.formats.safe_pickle import read_adj_pkl, safe_load
from stjax.data.formats.stllm import is_stllm_folder, read_stllm_folder, read_stllm_split
from stjax.errors import UserError

__all__ = [
  "read_series",
  "read_graph",
  "kind_of",
  "read_dcrnn_h5",
  "read_adj_pkl",
  "safe_load",
  "read_data_npz",
  "read_adj_npz",
  "read_stllm_folder",
  "read_stllm_split",
  "series_reader",
  "read_node_csv",
  "read_matrix_csv",
  "read_edge_csv",
  "read_node_ids",
]

SERIES_HELP = (
  ".h5 (DCRNN), .npz with 'data' (ST-SSL), an ST-LLM {train,val,test}.npz folder, .csv (node columns)"
)
GRAPH_HELP = ".pkl (DCRNN adj_mx), .npz with 'adj_mx', .csv (N x N matrix or from,to,distance edge list)"


def _existing(path) -> pathlib.Path:
  return paths.existing(path)  # one line for a missing, looping, broken or unreadable path


def _npz_keys(path: pathlib.Path) -> list[str]:
  load_npz(path, ())  # validates it is an npz
  with np.load(path, allow_pickle=False) as z:
    return list(z.files)


def kind_of(path: str | pathlib.Path) -> str:
  """'series' or 'graph': what `path` holds, judged from its type and content."""
  path = _existing(path)
  suffix = path.suffix.lower()
  if path.is_dir() or suffix == ".h5":
    return "series"
  if suffix == ".pkl":
    return "graph"
  if suffix == ".npz":
    keys = _npz_keys(path)
    if "adj_mx" in keys:
      return "graph"
    if "data" in keys or {"x", "y"} <= set(keys):
      return "series"
    raise UserError(
      f"{path}: unknown .npz layout (arrays: {', '.join(keys) or 'none'}); expected 'data', 'x'/'y' or 'adj_mx'"
    )
  if suffix == ".csv":
    return "series" if sniff_csv(path) == "series" else "graph"
  raise UserError(
    f"{path}: unknown file format '{suffix or path.name}' (series: {SERIES_HELP}; graph: {GRAPH_HELP})"
  )


def read_series(path: str | pathlib.Path, **options) -> Dataset:
  """Reads a series file (see the module docstring for formats and options) into a Dataset."""
  reader, where = series_reader(path)
  return reader(where, **options)


def series_reader(path: str | pathlib.Path, whole_folder: bool = True) -> tuple[Callable, pathlib.Path]:
  """(reader function, the path to give it) for a series file; its options are keyword arguments.

  `whole_folder`: an ST-LLM `{train,val,test}.npz` inside a complete split folder reads the whole
  folder; False reads that file's windows alone (as does such a file without its siblings).
  """
  path = _existing(path)
  suffix = path.suffix.lower()
  if path.is_dir():
    return read_stllm_folder, path
  if suffix == ".h5":
    return read_dcrnn_h5, path
  if suffix == ".npz":
    if whole_folder and path.stem in ("train", "val", "test") and is_stllm_folder(path.parent):
      return read_stllm_folder, path.parent
    keys = set(_npz_keys(path))
    if "data" not in keys and {"x", "y"} <= keys:
      return read_stllm_split, path
    return read_data_npz, path
  if suffix == ".csv":
    return read_node_csv, path
  raise UserError(f"{path}: unknown series format '{suffix or path.name}' (expected {SERIES_HELP})")


def _ordered(
  path: pathlib.Path, ids: tuple[str, ...], adj: np.ndarray, wanted: tuple[str, ...]
) -> np.ndarray:
  """Reorders a graph with node `ids` to the order `wanted`; when `wanted` is a subset of `ids`
  (a series of some of the graph's sensors), the graph restricted to those nodes."""
  if ids == wanted:
    return adj
  if len(set(wanted)) != len(wanted) or not set(wanted) <= set(ids):
    extra = sorted(set(wanted) - set(ids))[:3]
    raise UserError(
      f"{path}: its {len(ids)} node ids do not hold the {len(wanted)} given (e.g. {extra or 'duplicates'})"
    )
  index = {s: i for i, s in enumerate(ids)}
  perm = np.array([index[s] for s in wanted])
  return adj[np.ix_(perm, perm)]


def read_graph(
  path: str | pathlib.Path,
  num_nodes: int | None = None,
  node_ids: str | pathlib.Path | Sequence | None = None,
) -> np.ndarray:
  """Reads a graph file into a weighted adjacency [N, N] float32.

  Args:
    path: the graph file (see the module docstring).
    num_nodes: if given, N must equal it.
    node_ids: ids (or a file of ids) giving the node order: edge lists map through them; a
      pickle's own ids are reordered to them. Ignored by plain matrices, which have no ids.
  """
  path = _existing(path)
  suffix = path.suffix.lower()
  if suffix == ".pkl":
    ids, adj = read_adj_pkl(path)
    if node_ids is not None:
      adj = _ordered(path, ids, adj, read_node_ids(node_ids))
  elif suffix == ".npz":
    adj = read_adj_npz(path)
  elif suffix == ".csv":
    kind = sniff_csv(path)
    if kind == "edges":
      adj = read_edge_csv(path, num_nodes=num_nodes, node_ids=node_ids)
    elif kind == "matrix":
      adj = read_matrix_csv(path)
    else:
      raise UserError(f"{path}: not a graph CSV (neither an N x N matrix nor a from,to,distance edge list)")
  else:
    raise UserError(f"{path}: unknown graph format '{suffix or path.name}' (expected {GRAPH_HELP})")
  if num_nodes is not None and adj.shape[0] != num_nodes:
    raise UserError(
      f"{path}: adjacency is {adj.shape[0]} x {adj.shape[1]} but the series has {num_nodes} nodes"
    )
  return adj
