"""Lazy windows: the batch key names, the model-facing `DataSpec` and `WindowSource`.

A `WindowSource` cuts the windows of one split by index on demand from the series it shares with
the other splits (x scaled, y in original units, calendar features); examples are dicts with the
keys named once here (`MODEL_INPUT_KEYS`, `TRAIN_KEYS`, `EVAL_KEYS`). `DataSpec` holds the sizes,
offsets, calendar resolution and graph that models are built from.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

# The keys of an example / batch (table in docs/architecture.md), named once here.
MODEL_INPUT_KEYS = ("x", "tod", "dow")  # what a model reads: series, time of day, day of week.
TRAIN_KEYS = MODEL_INPUT_KEYS + ("y",)  # what a train step reads: inputs and targets.
EVAL_KEYS = TRAIN_KEYS + ("index", "valid")  # eval adds the window index and the padding mask.


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
