"""Every dataset stjax knows: sizes, protocol, reader options and where its files come from.

Local files live in `data_dir()/<dataset>/<file>` (`$STJAX_DATA`, default `~/.cache/stjax`).
`resolve(name)` also finds verified copies in the real-data folder (`$STJAX_SHARED_DATA`; unset:
`shared/data` in the folder that holds the repository checkout), each at its file's `shared` path.
Provenance of every file: docs/data_formats.md, "Where the data come from".
A file with `url=None` has no public direct link (Google Drive / Baidu releases); `note` says where
to get it by hand. `sha256` and `size` are recorded only for files byte-identical to the public file
the URL serves (checked against a byte copy of it), or, for files derived here without a URL (the
real full-length series), of the derived file; `sha256=None` means none is recorded, and such
a file is never reported verified (`download.verify` says "unverified: no checksum recorded").
"""

from __future__ import annotations

import os
import pathlib

from stjax.data import paths
from stjax.data.catalog import ALL, DatasetInfo, RemoteFile  # noqa: F401 (re-exported)
from stjax.errors import UserError

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in ALL}


def get(name: str) -> DatasetInfo:
  """The registry entry for `name`, or a UserError listing the known names."""
  try:
    return DATASETS[name]
  except KeyError:
    raise UserError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)})") from None


def data_dir() -> pathlib.Path:
  """Where downloads go: `$STJAX_DATA`, default `~/.cache/stjax`."""
  return pathlib.Path(os.environ.get("STJAX_DATA") or pathlib.Path.home() / ".cache" / "stjax").expanduser()


def shared_dir() -> pathlib.Path:
  """The real-data folder: `$STJAX_SHARED_DATA`, default `shared/data` beside the repository checkout."""
  default = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"
  return pathlib.Path(os.environ.get("STJAX_SHARED_DATA") or default).expanduser()


def local_path(info: DatasetInfo, f: RemoteFile) -> pathlib.Path:
  """The download target of a file."""
  return data_dir() / info.name / f.name


def find_local(name: str) -> dict[str, pathlib.Path | None]:
  """File name -> local path (data dir first, then the shared folder), or None when absent.

  Something at a candidate path that cannot be read (a symlink loop, a broken link, no permission)
  is a UserError saying so, not a file "not found".
  """
  info = get(name)
  found = {}
  for f in info.files:
    candidates = [local_path(info, f)] + ([shared_dir() / f.shared] if f.shared else [])
    found[f.name] = next((paths.readable_file(p) for p in candidates if paths.present(p)), None)
  return found


def resolve(name: str) -> dict[str, pathlib.Path]:
  """File name -> local path for every file of `name`; UserError with the fix when one is absent."""
  found = find_local(name)
  missing = [n for n, p in found.items() if p is None]
  if missing:
    info = get(name)
    manual = [info.file(n) for n in missing if info.file(n).url is None]
    how = f"run: python -m stjax.data download {name}"
    if manual:
      how += f" (files without a public link must be placed by hand in {data_dir() / name}: {manual[0].note})"
    raise UserError(f"dataset {name}: {', '.join(missing)} not found locally; {how}")
  return found


def load(name: str):
  """The named dataset as a `Dataset` with its adjacency attached (files must be local)."""
  from stjax.data.formats import read_graph, read_series  # formats import numpy/h5py; keep `list` light

  info = get(name)
  paths = resolve(name)
  dataset = read_series(paths[info.series], name=info.name, **info.reader_options)
  if info.graph is None:
    return dataset
  node_ids = paths[info.graph_node_ids] if info.graph_node_ids else dataset.node_ids
  adjacency = read_graph(paths[info.graph], num_nodes=dataset.num_nodes, node_ids=node_ids)
  return dataset.replace(adjacency=adjacency)
