"""The catalogue's record types: `DatasetInfo` (a named dataset) and `RemoteFile` (one of its files)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class RemoteFile:
  """One file of a dataset."""

  name: str  # local file name inside the dataset's folder
  url: str | None  # public direct link, or None when there is none
  sha256: str | None = None  # of the public file (checked against a byte-identical staged copy), or None
  size: int | None = None  # bytes, when known
  shared: str | None = None  # path of its verified copy under the real-data folder (shared_dir()), if any
  note: str = ""  # where to get it when url is None


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """A named dataset."""

  name: str  # registry name (config.data.name, `python -m stjax.data download NAME`)
  description: str  # one line: source, place, span
  nodes: int  # number of nodes N
  steps: int | None  # series length T, None when not known from a public source
  step_minutes: float  # time between two steps
  protocol: str  # stjax.data.protocols name
  series: str | None  # file name of the series among `files` (None: graph-only entry)
  graph: str | None  # file name of the graph among `files`
  files: tuple[RemoteFile, ...]  # every file of the dataset
  reader_options: dict = dataclasses.field(default_factory=dict)  # passed to read_series
  graph_node_ids: str | None = None  # file among `files` giving the graph's node order (edge lists)
  counts: bool = False  # values are counts (demand, flow): forecasts are clipped at 0 by default

  def file(self, name: str) -> RemoteFile:
    return next(f for f in self.files if f.name == name)
