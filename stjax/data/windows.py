"""Scalers, lazy windows and the data bundle a config builds.

`build_data(config.data)` reads (or generates) a `Dataset`, resolves its `Protocol`, splits the
windows chronologically, fits the `Scaler` on training data only, scales the input channels of the
series once (O(T N C)) and returns a `DataBundle` whose three `WindowSource`s cut windows by index
on demand: no [S, T, N, C] array is ever built.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import ml_collections
import numpy as np

from stjax.data import registry, synthetic
from stjax.data.dataset import Dataset
from stjax.data.missing import check_fill, fill_last
from stjax.data.protocols import Protocol, get_protocol
from stjax.errors import UserError

# The keys of an example / batch (table in docs/architecture.md), named once here.
MODEL_INPUT_KEYS = ("x", "tod", "dow")  # what a model reads: series, time of day, day of week.
TRAIN_KEYS = MODEL_INPUT_KEYS + ("y",)  # what a train step reads: inputs and targets.
EVAL_KEYS = TRAIN_KEYS + ("index", "valid")  # eval adds the window index and the padding mask.
_FIT_CHUNK = 2048  # time steps per chunk when fitting a scaler, bounds float64 temporaries


@dataclasses.dataclass(frozen=True)
class Scaler:
  """z-score `(v - mean) / std`, broadcast over [..., N, C].

  Attributes:
    mean: [1, C] (global) or [N, C] (per node) float32.
    std: same shape as mean, float32, > 0.
  """

  mean: np.ndarray
  std: np.ndarray

  def transform(self, v):
    """v: [..., N, C] NumPy or JAX array -> scaled, same type."""
    return (v - self.mean) / self.std

  def inverse(self, v):
    """v: [..., N, C] scaled NumPy or JAX array -> original units, same type."""
    return v * self.std + self.mean

  def target(self, channels: Sequence[int] | None) -> "Scaler":
    """The scaler of a subset of channels (None = all), e.g. the target channels."""
    if channels is None:
      return self
    idx = list(channels)
    return Scaler(self.mean[:, idx], self.std[:, idx])

  @classmethod
  def fit(
    cls, values: np.ndarray, weights: np.ndarray, rule: str, channels: Sequence[int], name: str
  ) -> "Scaler":
    """Fits on the steps with weight > 0 (each counted `weight` times).

    Args:
      values: [T, N, C] series.
      weights: [T] float64 multiplicity of each step (see `Protocol.scaler_weights`).
      rule: "global" (per channel), "per_node" (per node and channel), "global_train_val" (one
        scalar over `channels`, applied to every channel).
      channels: the channels that "global_train_val" pools.
      name: dataset name for error messages.
    """
    n, c = values.shape[1:]
    used = np.nonzero(weights > 0)[0]
    total = weights.sum()

    def weighted_sum(fn) -> np.ndarray:  # sum_t w_t fn(v_t) -> [N, C], in float64 chunks
      acc = np.zeros((n, c))
      for lo in range(0, len(used), _FIT_CHUNK):
        steps = used[lo : lo + _FIT_CHUNK]
        acc += np.tensordot(weights[steps], fn(values[steps].astype(np.float64)), axes=(0, 0))
      return acc

    node_mean = weighted_sum(lambda v: v) / total
    pool = list(channels)
    if rule == "per_node":
      mean = node_mean
    elif rule == "global":
      mean = node_mean.mean(axis=0, keepdims=True)
    else:
      mean = np.full((1, c), node_mean[:, pool].mean())
    sq = weighted_sum(lambda v: (v - mean) ** 2) / total  # [N, C] weighted mean squared deviation
    if rule == "per_node":
      # sklearn's StandardScaler (STH-SepNet) leaves a constant column unscaled (std 1).
      std = np.sqrt(sq)
      std[std == 0] = 1.0
    else:
      std = (
        np.sqrt(sq.mean(axis=0, keepdims=True))
        if rule == "global"
        else np.full((1, c), np.sqrt(sq[:, pool].mean()))
      )
      if np.any(std == 0):
        raise UserError(f"dataset {name}: the training data is constant (std 0), cannot z-score it")
    return cls(mean.astype(np.float32), std.astype(np.float32))


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What models are built from.

  Attributes:
    num_nodes, input_len, output_len, in_channels, out_channels: sizes of x [T_in, N, C_in] and
      y [T_out, N, C_out].
    input_offsets, output_offsets: step offsets of x and y relative to the current step.
    steps_per_day: time-of-day resolution (e.g. 288 for 5-minute data).
    adjacency: [N, N] float32 graph or None.
    channel_names: names of the target channels (y).
  """

  num_nodes: int
  input_len: int
  output_len: int
  in_channels: int
  out_channels: int
  input_offsets: tuple[int, ...]
  output_offsets: tuple[int, ...]
  steps_per_day: int
  adjacency: np.ndarray | None
  channel_names: tuple[str, ...]


class WindowSource:
  """Random access to the windows of one split; grain `RandomAccessDataSource` compatible.

  Each example is a dict: x [T_in, N, C_in] float32 (scaled), tod [T_in] float32, dow [T_in]
  int32, y [T_out, N, C_out] float32 (original units), index [] int32 (window index in the split).
  """

  def __init__(
    self,
    split: str,
    scaled_inputs: np.ndarray,
    targets: np.ndarray,
    time_of_day: np.ndarray,
    day_of_week: np.ndarray,
    times: np.ndarray,
    input_offsets: Sequence[int],
    output_offsets: Sequence[int],
  ):
    self.split = split
    self._x = scaled_inputs  # [T, N, C_in] float32, shared by all splits
    self._y = targets  # [T, N, C_out] float32 original units (a view where possible)
    self._tod = time_of_day
    self._dow = day_of_week
    self.times = times  # [S] int64 current step of each window
    self.input_offsets = np.asarray(input_offsets, np.int64)
    self.output_offsets = np.asarray(output_offsets, np.int64)

  def __len__(self) -> int:
    return len(self.times)

  def __repr__(self) -> str:
    return f"WindowSource({self.split}, {len(self)} windows)"

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    i = int(i)
    if not -len(self) <= i < len(self):
      raise IndexError(f"window {i} out of range for {len(self)} {self.split} windows")
    i %= len(self)
    return self._gather(self.times[i], np.int32(i))

  def node_activity(self) -> np.ndarray:
    """[N] mean |target| of each node over this split's steps (first target channel; missing
    readings are 0): how busy each node is, e.g. to pick the nodes a plot shows."""
    return np.abs(self._y[self.times, :, 0]).mean(axis=0)

  def batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """Windows `indices` stacked along a leading batch axis B (one gather per key)."""
    idx = np.asarray(indices, np.int64)
    return self._gather(self.times[idx][:, None], idx.astype(np.int32))

  def _gather(self, t, index) -> dict[str, np.ndarray]:
    """The example (`t` a start step) or batch (`t` [B, 1]) of the windows starting at `t`."""
    ti, to = t + self.input_offsets, t + self.output_offsets
    return {
      "x": self._x[ti],
      "tod": self._tod[ti],
      "dow": self._dow[ti],
      "y": self._y[to],
      "index": index,
    }


@dataclasses.dataclass(frozen=True)
class DataBundle:
  """A dataset under a protocol: its fitted scaler, three splits and the model-facing spec."""

  dataset: Dataset
  protocol: Protocol
  scaler: Scaler  # fitted on all dataset channels ([1 | N, C])
  splits: dict[str, WindowSource]  # "train", "val", "test"
  spec: DataSpec
  nonnegative: bool = False  # forecasts are clipped at 0 (count data; config.data.nonnegative)

  @property
  def target_scaler(self) -> Scaler:
    """Scaler of the target channels: `target_scaler.inverse(pred)` gives original units."""
    return self.scaler.target(self.protocol.target_channels)


def _channels(sel: tuple[int, ...] | None, dataset: Dataset, field: str, protocol: str) -> list[int]:
  if sel is None:
    return list(range(dataset.num_channels))
  bad = [c for c in sel if not 0 <= c < dataset.num_channels]
  if bad:
    raise UserError(
      f"protocol {protocol}: {field} {sel} but dataset {dataset.name} has channels {dataset.channels}"
    )
  return list(sel)


def _check_finite(dataset: Dataset, weights: np.ndarray):
  finite = np.isfinite(dataset.values)
  if finite.all():
    return
  bad_t, bad_n, _ = np.nonzero(~finite)
  part = "training data" if np.any(weights[bad_t] > 0) else "series"
  raise UserError(
    f"dataset {dataset.name}: {len(bad_t)} NaN/inf values in the {part} (first at step "
    f"{bad_t[0]}, node {bad_n[0]}); fill or drop them first"
  )


def bundle_from_dataset(
  dataset: Dataset,
  protocol: Protocol,
  scaler: Scaler | None = None,
  times: dict[str, np.ndarray] | None = None,
  nonnegative: bool = False,
  fill_missing: str = "none",
) -> DataBundle:
  """Splits, fits the scaler on training data, scales inputs once and builds the sources.

  Args:
    dataset, protocol: the series and how it is cut.
    scaler: a scaler fitted earlier (a run's stored one): used as is, nothing is fitted.
    times: {split: current steps [S]} to use instead of the protocol's chronological split (a file
      that holds one split only); needs `scaler`, since there is no training split to fit on.
    nonnegative: forecasts are clipped at 0 (count data; `nonnegative_of(config.data)`).
    fill_missing: "none" | "last": input zeros take the last non-zero reading (stjax.data.missing);
      the targets keep their zeros.
  """
  if times is None:
    times = protocol.split_times(dataset.num_steps)
    weights = protocol.scaler_weights(dataset.num_steps, times)
  elif scaler is None:
    raise ValueError("bundle_from_dataset: explicit split times need a fitted scaler")
  else:
    weights = np.zeros(dataset.num_steps)
  _check_finite(dataset, weights)
  in_ch = _channels(protocol.input_channels, dataset, "input_channels", protocol.name)
  out_ch = _channels(protocol.target_channels, dataset, "target_channels", protocol.name)
  if scaler is None:
    scaler = Scaler.fit(dataset.values, weights, protocol.scaler_rule, in_ch, dataset.name)
  in_scaler = scaler.target(in_ch)
  raw = dataset.values[:, :, in_ch]
  if check_fill(fill_missing) == "last":
    raw = fill_last(raw, in_scaler.mean)
  x = in_scaler.transform(raw).astype(np.float32)
  if out_ch == list(range(dataset.num_channels)):
    y = dataset.values
  elif len(out_ch) == 1:
    y = dataset.values[:, :, out_ch[0] : out_ch[0] + 1]
  else:
    y = dataset.values[:, :, out_ch]
  splits = {
    k: WindowSource(
      k, x, y, dataset.time_of_day, dataset.day_of_week, t, protocol.input_offsets, protocol.output_offsets
    )
    for k, t in times.items()
  }
  return DataBundle(dataset, protocol, scaler, splits, spec_of(dataset, protocol), nonnegative)


def spec_of(dataset: Dataset, protocol: Protocol) -> DataSpec:
  """The model-facing shape of `dataset` cut by `protocol` (no values are read)."""
  in_ch = _channels(protocol.input_channels, dataset, "input_channels", protocol.name)
  out_ch = _channels(protocol.target_channels, dataset, "target_channels", protocol.name)
  return DataSpec(
    num_nodes=dataset.num_nodes,
    input_len=protocol.input_len,
    output_len=protocol.output_len,
    in_channels=len(in_ch),
    out_channels=len(out_ch),
    input_offsets=protocol.input_offsets,
    output_offsets=protocol.output_offsets,
    steps_per_day=dataset.steps_per_day,
    adjacency=dataset.adjacency,
    channel_names=tuple(dataset.channels[c] for c in out_ch),
  )


def default_data_config() -> ml_collections.ConfigDict:
  """`config.data` with every field documented; configs start from this and override."""
  c = ml_collections.ConfigDict()
  c.name = "synthetic"  # "synthetic" or a registry name (`python -m stjax.data list`)
  c.path = ""  # series file/folder; "" = the registry's local copy of `name`
  c.graph_path = ""  # adjacency file; "" = the registry's graph (or none / synthetic's own)
  c.protocol = ""  # dcrnn | stllm | pems | sthsepnet | stssl (docs/protocols.md); "" = the
  # registry's protocol for `name` (dcrnn for synthetic)
  c.input_len = 0  # input steps; 0 = the protocol's (12, or 48 for sthsepnet)
  c.output_len = 0  # horizon; 0 = the protocol's (12, 48 for sthsepnet, 1 for stssl)
  c.loss = ""  # training loss: "" = the protocol's (masked_mae, or mse for sthsepnet);
  # "masked_mae" (original units) | "mse" (scaled units)
  c.reader = default_reader_config()  # how to read `path` (files without dates need step_minutes
  # and start); set fields override the registry's own options for `name`
  c.nonnegative = "auto"  # clip forecasts at 0: auto (= the registry says the values are counts) | yes | no
  c.fill_missing = "none"  # input readings of 0 (missing in DCRNN-style data): "none" (fed as 0) |
  # "last" (the node's last non-zero reading; targets keep their 0s, masked as before)
  s = c.synthetic = ml_collections.ConfigDict()
  s.num_nodes = 48  # sensors on a generated road-like kNN graph
  s.num_steps = 8064  # time steps (8064 x 5 min = 28 days)
  s.step_minutes = 5  # sampling interval in minutes
  s.seed = 0  # generator seed: same seed, same data
  s.missing_rate = 0.01  # fraction of readings dropped to 0 (missing), in short outages
  return c


def default_reader_config() -> ml_collections.ConfigDict:
  """`config.data.reader`: read_series options; each field's empty value means "not set"."""
  c = ml_collections.ConfigDict()
  c.step_minutes = 0.0  # minutes per step (files without dates); 0 = not set
  c.start = ""  # date and time of step 0, e.g. 2016-08-07T03:40 (files without dates); "" = not set
  c.channels = ()  # a name per channel of an .npz 'data' array, e.g. ("flow",); () = not set
  c.channel = ""  # the name of the single value channel of a CSV / .h5 / split folder; "" = not set
  c.tod_channel = ""  # .npz: "" = the channel named time_of_day if any; "none"; or its index, e.g. "2"
  c.node_ids_key = ""  # .npz: array of node ids in the file (e.g. sensor_ids): restricts a larger graph
  c.key = ""  # .h5: the frame's key in the store; "" = 'df' or the only frame
  return c


def _reader_fields(reader) -> dict:
  """The set fields of `config.data.reader` as read_series keyword arguments."""
  options = {k: v for k, v in dict(reader or {}).items() if v not in ("", 0, 0.0, (), None)}
  if "tod_channel" in options:
    value = str(options["tod_channel"]).strip().lower()
    if value != "none" and not value.isdigit():
      raise UserError(
        f"config.data.reader.tod_channel: {options['tod_channel']!r} is not '', 'none' or an index"
      )
    options["tod_channel"] = None if value == "none" else int(value)
  if "channels" in options:
    options["channels"] = tuple(options["channels"])
  return options


def reader_options(config: ml_collections.ConfigDict) -> dict:
  """The `read_series` options of config.data: the registry's for `name` (unless `path` is
  given), then `name`, then config.data.reader's. Nothing is read."""
  options = {"name": config.name, **_reader_fields(config.get("reader"))}
  if not config.path and config.name != "synthetic":
    options = {**registry.get(config.name).reader_options, **options}
  return options


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
    dataset, protocol, nonnegative=nonnegative_of(config), fill_missing=config.get("fill_missing", "none")
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


def nonnegative_of(config: ml_collections.ConfigDict) -> bool:
  """config.data.nonnegative: "auto" = the registry's `counts` flag of `name` (False for synthetic
  data and unregistered names), "yes" | "no" = as given."""
  choice = str(config.get("nonnegative", "auto")).lower()
  if choice not in ("auto", "yes", "no"):
    raise UserError(f"config.data.nonnegative: {choice!r} is not auto, yes or no")
  if choice != "auto":
    return choice == "yes"
  return config.name in registry.DATASETS and registry.DATASETS[config.name].counts


def describe(bundle: DataBundle) -> str:
  """One line: dataset, protocol, window counts."""
  s = bundle.splits
  return (
    f"{bundle.dataset.name} {tuple(bundle.dataset.values.shape)} under {bundle.protocol.name}: "
    f"{bundle.spec.input_len} -> {bundle.spec.output_len}, windows train/val/test "
    f"{len(s['train'])}/{len(s['val'])}/{len(s['test'])}"
  )


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
