"""Protocols, splits, scalers and lazy windows against materialised float64 references."""

import dataclasses

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from stjax.data import (
  PROTOCOLS,
  Dataset,
  Scaler,
  build_data,
  bundle_from_dataset,
  default_data_config,
  get_protocol,
  regular_calendar,
)
from stjax.errors import UserError


def make_dataset(values, step_minutes=5.0, name="toy"):
  tod, dow = regular_calendar(values.shape[0], step_minutes)
  return Dataset(
    name=name,
    values=values.astype(np.float32),
    channels=tuple(f"c{i}" for i in range(values.shape[2])),
    step_minutes=step_minutes,
    time_of_day=tod,
    day_of_week=dow,
  )


def materialise(values, times, offsets):
  """Reference windows [S, len(offsets), N, C] in float64."""
  return np.stack([values[t + np.asarray(offsets)] for t in times]).astype(np.float64)


def test_dcrnn_split_counts_match_metr_la():
  times = PROTOCOLS["dcrnn"].split_times(34272)
  assert [len(times[k]) for k in ("train", "val", "test")] == [23974, 3425, 6850]
  assert times["train"][0] == 11 and times["test"][-1] == 34272 - 13
  assert np.all(np.diff(np.concatenate([times["train"], times["val"], times["test"]])) == 1)


def test_stssl_split_and_offsets_match_nycbike1():
  p = PROTOCOLS["stssl"].resolve(steps_per_day=24)
  assert p.input_offsets == (
    tuple(range(-73, -68)) + tuple(range(-49, -44)) + tuple(range(-25, -20)) + tuple(range(-3, 1))
  )
  times = p.split_times(4392)
  assert [len(times[k]) for k in ("train", "val", "test")] == [3023, 431, 864]
  np.testing.assert_array_equal(times["test"], np.arange(3527, 4391))
  p30 = PROTOCOLS["stssl"].resolve(steps_per_day=48)
  assert p30.input_len == 35 and p30.input_offsets[0] == -147 and p30.input_offsets[9] == -99
  with pytest.raises(UserError, match="stssl"):
    PROTOCOLS["stssl"].resolve(steps_per_day=288)
  with pytest.raises(UserError, match="data.input_len"):
    PROTOCOLS["stssl"].resolve(steps_per_day=24, input_len=12)


def tslib_windows(length, seq_len, pred_len):
  """Time-Series-Library Dataset_Custom borders, as published: current times per split."""
  num_train, num_test = int(length * 0.7), int(length * 0.2)
  num_vali = length - num_train - num_test
  border1s = [0, num_train - seq_len, length - num_test - seq_len]
  border2s = [num_train, num_train + num_vali, length]
  out = {}
  for k, b1, b2 in zip(("train", "val", "test"), border1s, border2s):
    n = (b2 - b1) - seq_len - pred_len + 1
    out[k] = np.array([b1 + i + seq_len - 1 for i in range(n)])
  return out


@pytest.mark.parametrize("length,seq,pred", [(1000, 48, 48), (777, 24, 12), (2016, 48, 12)])
def test_sthsepnet_borders_match_tslib(length, seq, pred):
  p = PROTOCOLS["sthsepnet"].resolve(288, input_len=seq, output_len=pred)
  assert p.input_offsets == tuple(range(-seq + 1, 1)) and p.output_offsets == tuple(range(1, pred + 1))
  ours, ref = p.split_times(length), tslib_windows(length, seq, pred)
  for k in ref:
    np.testing.assert_array_equal(ours[k], ref[k])


def test_global_scaler_matches_materialised_train_inputs(rng):
  values = rng.gamma(3.0, 10.0, size=(300, 5, 2))
  ds = make_dataset(values)
  b = bundle_from_dataset(ds, get_protocol("dcrnn"))
  x_train = materialise(values[..., :1], b.splits["train"].times, b.protocol.input_offsets)
  np.testing.assert_allclose(b.scaler.mean[0, 0], x_train.mean(), rtol=1e-6)
  np.testing.assert_allclose(b.scaler.std[0, 0], x_train.std(), rtol=1e-6)
  assert b.spec.in_channels == 1 and b.spec.out_channels == 1 and b.spec.channel_names == ("c0",)


def test_stssl_scaler_is_one_scalar_over_train_and_val_inputs(rng):
  values = rng.poisson(8.0, size=(24 * 12, 6, 2)).astype(np.float64)
  b = bundle_from_dataset(make_dataset(values, 60.0), get_protocol("stssl").resolve(24))
  offs = b.protocol.input_offsets
  x = np.concatenate([materialise(values, b.splits[k].times, offs) for k in ("train", "val")])
  np.testing.assert_allclose(b.scaler.mean, np.full((1, 2), x.mean()), rtol=1e-6)
  np.testing.assert_allclose(b.scaler.std, np.full((1, 2), x.std()), rtol=1e-6)


def test_per_node_scaler_fits_training_rows_only(rng):
  values = rng.normal(50, 5, size=(500, 4, 1)) + np.arange(4)[None, :, None] * 10
  values[:, 3] = 7.0  # a constant sensor: sklearn leaves it unscaled (std 1)
  values[400:] += 1000  # val/test: must not influence the scaler
  b = bundle_from_dataset(make_dataset(values), get_protocol("sthsepnet").resolve(288, 24, 24))
  train_rows = values[: int(500 * 0.7)]
  np.testing.assert_allclose(b.scaler.mean, train_rows.mean(0), rtol=1e-6)
  np.testing.assert_allclose(b.scaler.std[:3], train_rows.std(0)[:3], rtol=1e-5)
  assert b.scaler.std[3, 0] == 1.0


def test_windows_lazy_and_exact(rng):
  values = rng.normal(60, 8, size=(400, 7, 2))
  b = bundle_from_dataset(make_dataset(values), get_protocol("sthsepnet").resolve(288, 16, 8))
  src = b.splits["test"]
  assert b.splits["train"]._x is src._x  # one scaled copy of the series, shared by the splits
  i = 5
  ex = src[i]
  t = src.times[i]
  ref_x = (values[t - 15 : t + 1] - b.scaler.mean) / b.scaler.std
  np.testing.assert_allclose(ex["x"], ref_x, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(ex["y"], values[t + 1 : t + 9].astype(np.float32))
  np.testing.assert_array_equal(ex["tod"], b.dataset.time_of_day[t - 15 : t + 1])
  assert ex["x"].shape == (16, 7, 2) and ex["y"].shape == (8, 7, 2) and ex["index"] == 5
  batch = src.batch([5, 0, len(src) - 1])
  for k in ("x", "tod", "dow", "y"):
    np.testing.assert_array_equal(batch[k][0], ex[k])
    np.testing.assert_array_equal(batch[k][2], src[-1][k])
  with pytest.raises(IndexError):
    src[len(src)]


def test_scaler_numpy_and_jax_round_trip(rng):
  s = Scaler(rng.normal(size=(3, 2)).astype(np.float32), rng.uniform(1, 2, size=(3, 2)).astype(np.float32))
  v = rng.normal(size=(4, 5, 3, 2)).astype(np.float32)
  np.testing.assert_allclose(s.inverse(s.transform(v)), v, atol=1e-5)
  out = s.transform(jnp.asarray(v))
  assert isinstance(out, jnp.ndarray)
  np.testing.assert_allclose(np.asarray(out), (v - s.mean) / s.std, rtol=1e-5)
  np.testing.assert_allclose(s.target([1]).inverse(v[..., 1:]), v[..., 1:] * s.std[:, 1:] + s.mean[:, 1:])


def test_bad_inputs_give_user_errors(rng):
  values = rng.normal(50, 5, size=(100, 3, 1))
  with pytest.raises(UserError, match="spans 24 steps.*only 20"):
    bundle_from_dataset(make_dataset(values[:20]), get_protocol("dcrnn"))
  bad = values.copy()
  bad[10, 1, 0] = np.nan
  with pytest.raises(UserError, match="dataset toy: 1 NaN/inf values in the training data"):
    bundle_from_dataset(make_dataset(bad), get_protocol("dcrnn"))
  bad = values.copy()
  bad[95, 0, 0] = np.inf
  with pytest.raises(UserError, match="dataset toy: 1 NaN/inf values in the series"):
    bundle_from_dataset(make_dataset(bad), get_protocol("dcrnn"))
  with pytest.raises(UserError, match="constant"):
    bundle_from_dataset(make_dataset(np.ones((100, 3, 1))), get_protocol("dcrnn"))
  with pytest.raises(UserError, match="data.protocol: unknown protocol 'dcrn'"):
    get_protocol("dcrn")
  c = default_data_config()
  c.protocol = "nope"
  with pytest.raises(UserError, match="unknown protocol"):
    build_data(c)
  c = default_data_config()
  c.name = "no-such-set"
  with pytest.raises(UserError, match="unknown dataset 'no-such-set'"):
    build_data(c)
  c = default_data_config()
  c.unlisted = 1
  with pytest.raises(UserError, match="config.data: unknown field"):
    build_data(c)


def test_build_data_synthetic_and_overrides():
  c = default_data_config()
  c.synthetic.num_nodes, c.synthetic.num_steps = 6, 600
  c.protocol, c.input_len, c.output_len = "sthsepnet", 24, 6
  b = build_data(c)
  assert b.spec.input_len == 24 and b.spec.output_len == 6 and b.spec.num_nodes == 6
  assert b.spec.steps_per_day == 288 and b.spec.adjacency.shape == (6, 6)
  assert b.scaler.mean.shape == (6, 1)  # per node
  assert b.protocol.report_horizons == ()  # sthsepnet reports the average only
  assert PROTOCOLS["dcrnn"].resolve(288, output_len=6).report_horizons == (3, 6)
  assert PROTOCOLS["dcrnn"].resolve(288, output_len=24).report_horizons == (3, 6, 12, 24)
  # The training loss can be overridden; the rest of the protocol stays.
  c.loss = "masked_mae"
  assert build_data(c).protocol == dataclasses.replace(b.protocol, loss="masked_mae")
  c.loss = "l1"
  with pytest.raises(UserError, match="data.loss must be one of"):
    build_data(c)
  # Every field of the default config carries a comment.
  import inspect

  from stjax.data import windows

  src = inspect.getsource(windows.default_data_config)
  for line in src.splitlines():
    if line.strip().startswith(("c.", "s.")) and "=" in line:
      assert "#" in line, line


def test_real_nycbike1_stssl_windows(shared_data):
  root = shared_data / "NYC_ST-SSL" / "NYCBike1"
  c = default_data_config()
  c.name, c.protocol = "nycbike1", "stssl"
  c.path, c.graph_path = str(root / "NYCBike1.npz"), str(root / "adj_mx.npz")  # explicit files
  c.reader = ml_collections.ConfigDict({"step_minutes": 60, "start": "2014-04-01"})
  b = build_data(c)
  raw = np.load(root / "NYCBike1.npz")["data"][..., :2].astype(np.float64)
  assert [len(b.splits[k]) for k in ("train", "val", "test")] == [3023, 431, 864]
  np.testing.assert_array_equal(b.splits["test"].times, np.arange(3527, 4391))
  offs = b.protocol.input_offsets
  x = np.concatenate([materialise(raw, b.splits[k].times, offs) for k in ("train", "val")])
  np.testing.assert_allclose(b.scaler.mean[0, 0], x.mean(), rtol=1e-6)
  np.testing.assert_allclose(b.scaler.std[0, 0], x.std(), rtol=1e-6)
  test = b.splits["test"].batch(np.arange(864))
  assert test["x"].shape == (864, 19, 128, 2) and test["y"].shape == (864, 1, 128, 2)
  np.testing.assert_array_equal(test["y"][:, 0], raw[3528:4392].astype(np.float32))
  ref = (materialise(raw, np.arange(3527, 4391), offs) - x.mean()) / x.std()
  np.testing.assert_allclose(test["x"], ref, atol=2e-5)
  assert b.spec.adjacency.shape == (128, 128) and b.spec.channel_names == ("inflow", "outflow")


def test_registry_names_resolve_to_the_shared_files(shared_data):
  c = default_data_config()
  c.name = "metr-la-excerpt"  # protocol "" = the registry's (dcrnn)
  b = build_data(c)
  assert b.protocol.name == "dcrnn" and b.dataset.values.shape == (2016, 207, 1)
  assert [len(b.splits[k]) for k in ("train", "val", "test")] == [1395, 199, 399]
  assert (b.spec.adjacency > 0).sum() == 1722
  assert b.dataset.timestamps[0] == np.datetime64("2012-03-01T00:00")
