"""The one dataset abstraction every reader produces.

A `Dataset` is a multivariate series on a set of nodes: values [time, nodes, channels], the
calendar features of each step, optional node ids and an optional graph. Readers
(`stjax.data.formats`) build it from files; protocols (`stjax.data.protocols`) cut it into windows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A spatio-temporal series.

  Attributes:
    name: short name, e.g. "metr-la".
    values: [time, nodes, channels] float32. Missing readings are stored as the source stores
      them (0 in DCRNN speed data); protocols decide how they are masked.
    channels: one name per channel, e.g. ("speed",) or ("inflow", "outflow").
    step_minutes: sampling interval in minutes.
    time_of_day: [time] float32 in [0, 1), fraction of the day at each step.
    day_of_week: [time] int32 in 0..6 (0 = Monday).
    timestamps: [time] datetime64[s] strictly increasing, or None when the source has none.
    node_ids: one id per node, or None.
    adjacency: [nodes, nodes] float32 weighted adjacency, or None.
  """

  name: str
  values: np.ndarray
  channels: tuple[str, ...]
  step_minutes: float
  time_of_day: np.ndarray
  day_of_week: np.ndarray
  timestamps: np.ndarray | None = None
  node_ids: tuple[str, ...] | None = None
  adjacency: np.ndarray | None = None

  def __post_init__(self):
    v = self.values
    if v.ndim != 3:
      raise UserError(f"dataset {self.name}: values must be [time, nodes, channels], got shape {v.shape}")
    t, n, c = v.shape
    if len(self.channels) != c:
      raise UserError(f"dataset {self.name}: {c} channels but {len(self.channels)} channel names")
    for field in ("time_of_day", "day_of_week"):
      if getattr(self, field).shape != (t,):
        raise UserError(
          f"dataset {self.name}: {field} must have shape ({t},), got {getattr(self, field).shape}"
        )
    if self.timestamps is not None:
      if self.timestamps.shape != (t,):
        raise UserError(f"dataset {self.name}: {t} steps but {self.timestamps.shape[0]} timestamps")
      if t > 1 and not np.all(np.diff(self.timestamps) > np.timedelta64(0, "s")):
        raise UserError(f"dataset {self.name}: timestamps are not strictly increasing")
    if self.node_ids is not None and len(self.node_ids) != n:
      raise UserError(f"dataset {self.name}: {n} nodes but {len(self.node_ids)} node ids")
    if self.adjacency is not None and self.adjacency.shape != (n, n):
      raise UserError(
        f"dataset {self.name}: adjacency is {self.adjacency.shape} but the series has {n} nodes"
      )

  @property
  def num_steps(self) -> int:
    return self.values.shape[0]

  @property
  def num_nodes(self) -> int:
    return self.values.shape[1]

  @property
  def num_channels(self) -> int:
    return self.values.shape[2]

  @property
  def steps_per_day(self) -> int:
    return int(round(24 * 60 / self.step_minutes))

  def replace(self, **changes) -> "Dataset":
    return dataclasses.replace(self, **changes)


def calendar_features(timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Time-of-day fraction [time] float32 and day-of-week [time] int32 (0 = Monday)."""
  ts = timestamps.astype("datetime64[s]")
  days = ts.astype("datetime64[D]")
  seconds = (ts - days).astype(np.int64)
  tod = (seconds / 86400.0).astype(np.float32)
  dow = ((days.astype(np.int64) + 3) % 7).astype(np.int32)  # 1970-01-01 was a Thursday (3).
  return tod, dow


def regular_calendar(
  num_steps: int, step_minutes: float, start_day_of_week: int = 0, start_time_of_day: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
  """Calendar features for a series with no timestamps: regular steps from a known start."""
  steps_per_day = 24 * 60 / step_minutes
  pos = start_time_of_day * steps_per_day + np.arange(num_steps)
  tod = ((pos % steps_per_day) / steps_per_day).astype(np.float32)
  dow = ((start_day_of_week + pos // steps_per_day) % 7).astype(np.int32)
  return tod, dow
