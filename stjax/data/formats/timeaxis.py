"""Time axes shared by the readers: regular steps from a start, and ordering checks."""

from __future__ import annotations

import numpy as np

from stjax.errors import UserError


def parse_start(start, path) -> np.datetime64:
  try:
    return np.datetime64(start, "s")
  except (ValueError, TypeError):
    raise UserError(
      f"{path}: start={start!r} is not a date/time like '2016-07-01' or '2012-03-01T00:00'"
    ) from None


def regular_timestamps(num_steps: int, step_minutes: float | None, start, path) -> np.ndarray:
  """[num_steps] datetime64[s] from a start and a step, for files that store no dates."""
  if step_minutes is None or start is None:
    raise UserError(
      f"{path}: the file has no dates; pass step_minutes= and start= "
      "(the registry knows them: python -m stjax.data list)"
    )
  if not step_minutes > 0:
    raise UserError(f"{path}: step_minutes must be > 0, got {step_minutes}")
  step = np.timedelta64(int(round(step_minutes * 60)), "s")
  return parse_start(start, path) + step * np.arange(num_steps)


def checked_step_minutes(timestamps: np.ndarray, path) -> float:
  """The median step of strictly increasing timestamps [T]; UserError naming the first bad step."""
  if timestamps.shape[0] < 2:
    raise UserError(f"{path}: fewer than 2 time steps")
  diff = np.diff(timestamps.astype("datetime64[s]")).astype(np.int64)
  bad = np.flatnonzero(diff <= 0)
  if bad.size:
    i = int(bad[0])
    raise UserError(
      f"{path}: timestamps are not strictly increasing (step {i + 1} at {timestamps[i + 1]} "
      f"follows {timestamps[i]})"
    )
  return float(np.median(diff)) / 60.0
