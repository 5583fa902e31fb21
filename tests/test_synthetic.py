"""Synthetic traffic: determinism, structure (cycles, spreading, missing), scale, learnability."""

import numpy as np
import pytest

from stjax.baselines import HistoricalAverage, last_value
from stjax.data import bundle_from_dataset, get_protocol, synthetic
from stjax.errors import UserError


def test_deterministic_by_seed():
  a = synthetic.generate(num_nodes=12, num_steps=600, seed=5)
  b = synthetic.generate(num_nodes=12, num_steps=600, seed=5)
  c = synthetic.generate(num_nodes=12, num_steps=600, seed=6)
  np.testing.assert_array_equal(a.values, b.values)
  np.testing.assert_array_equal(a.adjacency, b.adjacency)
  assert not np.array_equal(a.values, c.values)


def test_shapes_calendar_missing_and_graph():
  ds = synthetic.generate(num_nodes=40, num_steps=288 * 7, step_minutes=5, seed=1, missing_rate=0.05)
  assert ds.values.shape == (2016, 40, 1) and ds.values.dtype == np.float32
  assert ds.timestamps[0] == np.datetime64("2024-01-01T00:00") and ds.steps_per_day == 288
  assert ds.day_of_week[0] == 0 and ds.day_of_week[-1] == 6
  missing = (ds.values == 0).mean()
  assert 0.03 < missing < 0.07, missing
  assert ds.values.min() == 0 and 3 <= ds.values[ds.values > 0].min() and ds.values.max() < 90
  adj = ds.adjacency
  np.testing.assert_array_equal(np.diag(adj), 1)
  np.testing.assert_allclose(adj, adj.T)
  degree = (adj > 0).sum(1) - 1
  assert degree.min() >= 4 and degree.max() <= 12  # kNN (k=4), symmetrised: sparse, road-like
  assert synthetic.generate(num_nodes=8, num_steps=50, missing_rate=0).values.min() > 0


def test_daily_and_weekly_cycles():
  ds = synthetic.generate(num_nodes=30, num_steps=288 * 14, seed=2, missing_rate=0)
  v = ds.values[..., 0].mean(1)
  hour = ds.time_of_day * 24
  weekday = ds.day_of_week < 5
  rush = v[weekday & (hour >= 7.5) & (hour < 9)].mean()
  night = v[weekday & (hour >= 2) & (hour < 4)].mean()
  weekend_rush = v[~weekday & (hour >= 7.5) & (hour < 9)].mean()
  assert rush < night - 5, (rush, night)
  assert rush < weekend_rush - 3, (rush, weekend_rush)


def test_congestion_spreads_along_edges():
  ds = synthetic.generate(num_nodes=60, num_steps=288 * 14, seed=4, missing_rate=0)
  v = ds.values[..., 0]
  # Deviation from each node's time-of-week mean isolates incidents from the recurrent pattern.
  slot = (ds.day_of_week % 7 > 4).astype(int) * 288 + np.rint(ds.time_of_day * 288).astype(int) % 288
  dev = v.copy()
  for s in np.unique(slot):
    dev[slot == s] -= v[slot == s].mean(0)
  adj = ds.adjacency > 0
  np.fill_diagonal(adj, False)
  corr = np.corrcoef(dev[:-3].T, dev[3:].T)[:60, 60:]  # corr(dev_i(t), dev_j(t + 15 min))
  far = ~adj & ~np.eye(60, dtype=bool)
  assert corr[adj].mean() > corr[far].mean() + 0.05, (corr[adj].mean(), corr[far].mean())


def test_given_adjacency_and_large_n_without_dense_graph():
  adj = np.zeros((5, 5), np.float32)
  adj[[0, 1, 2, 3], [1, 2, 3, 4]] = 1
  ds = synthetic.generate(num_nodes=5, num_steps=100, adjacency=adj + adj.T)
  np.testing.assert_array_equal(ds.adjacency, adj + adj.T)
  with pytest.raises(UserError, match="adjacency"):
    synthetic.generate(num_nodes=6, num_steps=100, adjacency=adj)
  src, dst, w, _ = synthetic.road_graph(500, k=4, seed=0)
  assert 500 * 4 <= len(src) <= 500 * 8 and np.all(src != dst) and w.min() > 0
  big = synthetic.generate(num_nodes=8600, num_steps=24, seed=0)
  assert big.values.shape == (24, 8600, 1) and big.adjacency is None


def test_bad_options():
  for kwargs, field in [
    ({"num_nodes": 1}, "num_nodes"),
    ({"num_steps": 0}, "num_steps"),
    ({"step_minutes": 7}, "step_minutes"),
    ({"missing_rate": 1.5}, "missing_rate"),
  ]:
    with pytest.raises(UserError, match=field):
      synthetic.generate(**kwargs)


def _features(bundle, ha, split, use_neighbours):
  """Per (window, node) features of a small linear forecaster; inputs with missing readings filled by HA."""
  ds, src = bundle.dataset, bundle.splits[split]
  batch = src.batch(np.arange(len(src)))
  ins = src.times[:, None] + src.input_offsets[None]
  x = ds.values[ins][..., 0]
  hin = ha.table[ha.slots[ins]][..., 0]
  x = np.where(x != 0, x, hin)
  cols = [x[:, -k] for k in (1, 2, 3, 4, 6, 12)] + [x[:, -1] - hin[:, -1], hin[:, -1]]
  if use_neighbours:
    adj = ds.adjacency - np.eye(ds.num_nodes, dtype=np.float32)
    p = adj / adj.sum(1, keepdims=True)
    nb, hnb = np.einsum("nm,stm->stn", p, x), np.einsum("nm,stm->stn", p, hin)
    cols += [nb[:, -1], nb[:, -2], nb[:, -4], nb[:, -1] - hnb[:, -1]]
  feats = np.stack(cols + [np.ones_like(x[:, -1])], -1)  # [S, N, F]
  return feats, batch["y"][..., 0], ha(src, batch)[..., 0], last_value(bundle, src, batch)[..., 0]


def test_learnable_neighbours_and_calendar_beat_baselines():
  ds = synthetic.generate(num_nodes=32, num_steps=288 * 21, seed=3)
  bundle = bundle_from_dataset(ds, get_protocol("dcrnn"))
  ha = HistoricalAverage(bundle)
  mae = {}
  for use_nb in (False, True):
    ftr, ytr, hatr, _ = _features(bundle, ha, "train", use_nb)
    fte, yte, hate, lvte = _features(bundle, ha, "test", use_nb)
    model, lv, hav = [], [], []
    for h in (3, 6, 12):
      a = np.concatenate([ftr, hatr[:, h - 1, :, None]], -1).reshape(-1, ftr.shape[-1] + 1)
      t = ytr[:, h - 1].reshape(-1)
      w = np.linalg.lstsq(a[t != 0], t[t != 0], rcond=None)[0]
      pred = np.concatenate([fte, hate[:, h - 1, :, None]], -1) @ w
      true = yte[:, h - 1]
      m = true != 0
      model.append(np.abs(pred - true)[m].mean())
      lv.append(np.abs(lvte[:, h - 1] - true)[m].mean())
      hav.append(np.abs(hate[:, h - 1] - true)[m].mean())
    mae[use_nb] = np.mean(model)
  assert mae[True] < 0.85 * np.mean(lv) and mae[True] < 0.85 * np.mean(hav), (mae, lv, hav)
  assert mae[True] < 0.97 * mae[False], mae  # the neighbours carry information
