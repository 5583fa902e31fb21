"""config.data.fill_missing: input zeros take the last observed reading; targets keep theirs."""

import numpy as np
import pytest

from stjax.data import build_data
from stjax.data.missing import fill_last
from stjax.data.windows import default_data_config
from stjax.errors import UserError


def _reference(values: np.ndarray, fallback: np.ndarray) -> np.ndarray:
  """Loop over time per (node, channel), in float64."""
  out = values.astype(np.float64).copy()
  t_len, n, c = values.shape
  for i in range(n):
    for j in range(c):
      last = None
      for t in range(t_len):
        if values[t, i, j] != 0:
          last = values[t, i, j]
        out[t, i, j] = last if last is not None else fallback[min(i, fallback.shape[0] - 1), j]
  return out


def test_fill_last_equals_a_loop(rng):
  values = rng.normal(size=(50, 4, 2)).astype(np.float32)
  values[rng.random(values.shape) < 0.3] = 0
  values[:7, 1, 0] = 0  # missing from the start: the fallback
  values[20:45, 2, 1] = 0  # a long outage
  for fallback in (rng.normal(size=(1, 2)), rng.normal(size=(4, 2))):
    got = fill_last(values, fallback.astype(np.float32))
    np.testing.assert_allclose(got, _reference(values, fallback), rtol=0, atol=1e-6)
    assert not np.any(got[values != 0] != values[values != 0])
  windows = np.stack([values[:12], values[30:42]])  # [S, T, N, C]: time on axis 1, each its own history
  got = fill_last(windows, np.zeros((1, 2), np.float32), time_axis=1)
  for s in range(2):
    np.testing.assert_allclose(got[s], _reference(windows[s], np.zeros((1, 2))), atol=1e-6)


def test_bundle_fills_inputs_not_targets():
  data = default_data_config()
  data.synthetic.num_nodes, data.synthetic.num_steps = 6, 600
  data.synthetic.missing_rate = 0.05
  raw = build_data(data)
  data.fill_missing = "last"
  filled = build_data(data)
  values = raw.dataset.values
  assert (values == 0).mean() > 0.01  # the synthetic series really has missing readings
  train = filled.splits["train"].batch(np.arange(len(filled.splits["train"])))
  base = raw.splits["train"].batch(np.arange(len(raw.splits["train"])))
  np.testing.assert_array_equal(train["y"], base["y"])  # targets keep their zeros
  scaler = filled.scaler
  want = (_reference(values, scaler.mean) - scaler.mean) / scaler.std
  times = filled.splits["train"].times[:, None] + filled.splits["train"].input_offsets
  np.testing.assert_allclose(train["x"], want[times], rtol=1e-5, atol=1e-5)
  zero = (0 - scaler.mean) / scaler.std
  assert np.isclose(base["x"], zero, atol=1e-6).any() and not np.isclose(train["x"], zero, atol=1e-6).any()
  np.testing.assert_array_equal(filled.scaler.mean, raw.scaler.mean)  # the scaler is the protocol's


def test_unknown_fill_rule_is_one_line():
  data = default_data_config()
  data.fill_missing = "mean"
  with pytest.raises(UserError, match="config.data.fill_missing: 'mean' is not one of none, last"):
    build_data(data)
