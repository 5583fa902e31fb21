"""Scalers, lazy windows and the data bundle a config builds.

`build_data(config.data)` reads (or generates) a `Dataset`, resolves its `Protocol`, splits the
windows chronologically, fits the `Scaler` on training data only, scales the input channels of the
series once (O(T N C)) and returns a `DataBundle` whose three `WindowSource`s cut windows by index
on demand: no [S, T, N, C] array is ever built.

The pieces live beside this module: `stjax.data.scaler`, `stjax.data.window_source` (key names,
`DataSpec`, `WindowSource`), `stjax.data.bundle` (`DataBundle`, `bundle_from_dataset`) and
`stjax.data.data_config` (`default_data_config`, reader options); their public names are
importable from here too. This module reads config.data's files (`build_data`, `read_data`).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from stjax.data import registry, synthetic
from stjax.data.bundle import DataBundle, bundle_from_dataset, describe, spec_of  # noqa: F401 (public here too)
from stjax.data.data_config import (  # noqa: F401 (public here too)
  default_data_config,
  default_reader_config,
  fill_rule_of,
  nonnegative_of,
  reader_options,
)
from stjax.data.dataset import Dataset
from stjax.data.protocols import Protocol, get_protocol
from stjax.data.scaler import Scaler  # noqa: F401 (public here too)
from stjax.data.window_source import (  # noqa: F401 (public here too)
  EVAL_KEYS,
  MODEL_INPUT_KEYS,
  TRAIN_KEYS,
  DataSpec,
  WindowSource,
)
from stjax.errors import UserError


def _read(config: ml_collections.ConfigDict) -> Dataset:
  """The dataset of config.data: from `path` when given, else the registry's local files of `name`."""
  from stjax.data import formats  # imported late: readers pull in h5py

  options = reader_options(config)
  graph_path, node_ids = config.graph_path, None
  if config.path:
    series_path = config.path
  else:
    info = registry.get(config.name)
    paths = registry.resolve(config.name)
    series_path = paths[info.series]
    if not graph_path and info.graph:
      graph_path = paths[info.graph]
      node_ids = paths[info.graph_node_ids] if info.graph_node_ids else None
  dataset = formats.read_series(series_path, **options)
  if graph_path:
    adj = formats.read_graph(
      graph_path, num_nodes=dataset.num_nodes, node_ids=node_ids if node_ids is not None else dataset.node_ids
    )
    dataset = dataset.replace(adjacency=np.asarray(adj, np.float32))
  return dataset


def build_data(config: ml_collections.ConfigDict) -> DataBundle:
  """config.data -> DataBundle (see `default_data_config` for the fields)."""
  dataset, protocol = read_data(config)
  return bundle_from_dataset(
    dataset, protocol, nonnegative=nonnegative_of(config), fill_missing=fill_rule_of(config)
  )


def read_data(config: ml_collections.ConfigDict) -> tuple[Dataset, Protocol]:
  """config.data -> (the dataset as read or generated, its resolved protocol); nothing is fitted."""
  unknown = sorted(set(config.keys()) - set(default_data_config().keys()))
  if unknown:
    raise UserError(f"config.data: unknown field(s) {', '.join(unknown)}")
  protocol_name = config.protocol
  if config.name == "synthetic":
    if config.graph_path or config.path:
      raise UserError(
        "config.data.path / graph_path: the synthetic dataset makes its own series and "
        "graph; leave them empty"
      )
    dataset = synthetic.generate(**dict(config.synthetic))
    protocol_name = protocol_name or "dcrnn"
  else:
    if not protocol_name:
      protocol_name = registry.get(config.name).protocol  # UserError listing the known names
    get_protocol(protocol_name)  # fail on a typo before reading any file
    dataset = _read(config)
  protocol = get_protocol(protocol_name).resolve(
    dataset.steps_per_day, config.input_len, config.output_len, config.get("loss", "")
  )  # older configs lack it
  return dataset, protocol


__all__: list[Any] = [
  "Scaler",
  "DataSpec",
  "WindowSource",
  "DataBundle",
  "bundle_from_dataset",
  "build_data",
  "read_data",
  "reader_options",
  "spec_of",
  "default_data_config",
  "describe",
]
