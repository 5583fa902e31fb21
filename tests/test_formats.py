"""Readers: fixture files written from code in each real layout, the real files of the real-data
folder (STJAX_SHARED_DATA), and one clear UserError for each kind of bad input."""

from __future__ import annotations

import datetime
import os
import pickle
import warnings

import h5py
import numpy as np
import pytest
from helpers import assert_one_line

from stjax.data.dataset import calendar_features
from stjax.data.formats import kind_of, read_adj_pkl, read_graph, read_series
from stjax.data.formats.gaussian import gaussian_kernel_adjacency
from stjax.errors import UserError


def write_pandas_fixed_h5(path, values, columns, index_ns, key="df", blocks=None):
  """Writes a DataFrame exactly as pandas' HDFStore 'fixed' format lays it out (PyTables attrs)."""
  with h5py.File(path, "w") as f:
    g = f.create_group(key)
    blocks = blocks or [list(range(len(columns)))]
    for k, v in dict(
      pandas_type=b"frame",
      pandas_version=b"0.15.2",
      encoding=b"UTF-8",
      errors=b"strict",
      ndim=2,
      nblocks=len(blocks),
      axis0_variety=b"regular",
      axis1_variety=b"regular",
      CLASS=b"GROUP",
      TITLE=b"",
      VERSION=b"1.0",
    ).items():
      g.attrs[k] = v
    for b in range(len(blocks)):
      g.attrs[f"block{b}_items_variety"] = b"regular"

    def array(node, data, **attrs):
      d = g.create_dataset(node, data=data)
      for k, v in dict(
        CLASS=b"ARRAY", FLAVOR=b"numpy", TITLE=b"", VERSION=b"2.4", transposed=1, **attrs
      ).items():
        d.attrs[k] = v

    array("axis0", columns, kind=b"integer" if columns.dtype.kind == "i" else b"string", name=b"N.")
    array("axis1", index_ns, kind=b"datetime64", name=b"N.", index_class=b"datetime")
    for b, cols in enumerate(blocks):
      array(
        f"block{b}_items",
        columns[cols],
        kind=b"integer" if columns.dtype.kind == "i" else b"string",
        name=b"N.",
      )
      array(
        f"block{b}_values", values[:, cols]
      )  # stored [T, n_b]: pandas writes the [n_b, T] block transposed


def _index(start, steps, minutes=5):
  ts = np.datetime64(start, "ns") + np.arange(steps) * np.timedelta64(minutes, "m")
  return ts.astype(np.int64)


def test_dcrnn_h5_roundtrip(tmp_path, rng):
  t, n = 50, 6
  values = rng.uniform(0, 70, (t, n))
  values[3, 2] = 0.0
  columns = np.array([773869, 767541, 767542, 717447, 717446, 717445], np.int64)
  index = _index("2012-03-01T23:00", t)
  write_pandas_fixed_h5(tmp_path / "m.h5", values, columns, index)
  ds = read_series(tmp_path / "m.h5")
  assert ds.values.shape == (t, n, 1) and ds.values.dtype == np.float32
  np.testing.assert_allclose(ds.values[..., 0], values, rtol=1e-6)
  assert ds.node_ids == tuple(str(c) for c in columns)
  assert ds.step_minutes == 5.0
  assert ds.timestamps[0] == np.datetime64("2012-03-01T23:00:00") and ds.timestamps[-1] == np.datetime64(
    "2012-03-02T03:05:00"
  )
  # 2012-03-01 was a Thursday: steps after midnight are Friday (4).
  np.testing.assert_allclose(ds.time_of_day[:13], (23 * 60 + 5 * np.arange(13)) % 1440 / 1440, atol=1e-6)
  assert ds.day_of_week[0] == 3 and ds.day_of_week[12] == 4
  assert kind_of(tmp_path / "m.h5") == "series"


def test_dcrnn_h5_string_ids_and_two_blocks(tmp_path, rng):
  values = rng.normal(size=(20, 4))
  columns = np.array([b"b1", b"a2", b"c3", b"d4"])
  write_pandas_fixed_h5(
    tmp_path / "s.h5", values, columns, _index("2017-01-01", 20), key="speed", blocks=[[0, 2], [1, 3]]
  )
  ds = read_series(tmp_path / "s.h5")  # the only frame, whatever its key
  assert ds.node_ids == ("b1", "a2", "c3", "d4")
  np.testing.assert_allclose(ds.values[..., 0], values, rtol=1e-6)


@pytest.mark.parametrize("damage", ["truncate", "text", "nonmonotonic", "no_frame", "bad_block"])
def test_dcrnn_h5_bad(tmp_path, rng, damage):
  path = tmp_path / "bad.h5"
  index = _index("2012-03-01", 40)
  if damage == "nonmonotonic":
    index[10], index[11] = index[11], index[10]
  values = rng.normal(size=(40, 3))
  if damage == "no_frame":
    with h5py.File(path, "w") as f:
      f["x"] = values
  else:
    write_pandas_fixed_h5(path, values, np.arange(3), index)
  if damage == "truncate":
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
  elif damage == "text":
    path.write_text("sensor,speed\n1,2\n")
  elif damage == "bad_block":
    with h5py.File(path, "a") as f:
      del f["df/block0_values"]
      f["df/block0_values"] = values[:, :2]
  with pytest.raises(UserError, match=r"bad\.h5") as e:
    read_series(path)
  assert "\n" not in str(e.value)
  if damage == "nonmonotonic":
    assert "not strictly increasing" in str(e.value)


@pytest.mark.parametrize("unit", ["ns", "us", "ms", "s"])
def test_dcrnn_h5_written_by_pandas(tmp_path, rng, unit):
  """Files really written by pandas + PyTables (`DataFrame.to_hdf`), at every datetime unit pandas
  stores (kind 'datetime64[ns]' / '[us]' / ...; the DCRNN release's bare 'datetime64' is above)."""
  pd = pytest.importorskip("pandas")
  pytest.importorskip("tables")
  t = 300
  index = pd.date_range("2012-03-01 23:00", periods=t, freq="5min", unit=unit)
  columns = [773869, 767541, 767542, 717447]
  values = rng.uniform(0, 70, (t, len(columns)))
  values[3, 2] = 0.0
  pd.DataFrame(values, index=index, columns=columns).to_hdf(tmp_path / "m.h5", key="df")
  with h5py.File(tmp_path / "m.h5") as f:
    assert f["df/axis1"].attrs["kind"] == f"datetime64[{unit}]".encode()  # the layout this test is about
  ds = read_series(tmp_path / "m.h5")
  np.testing.assert_allclose(ds.values[..., 0], values, rtol=1e-6)
  assert ds.node_ids == tuple(str(c) for c in columns) and ds.step_minutes == 5.0
  np.testing.assert_array_equal(ds.timestamps, index.values.astype("datetime64[s]"))
  assert ds.timestamps[0] == np.datetime64("2012-03-01T23:00:00") and ds.day_of_week[12] == 4  # Friday
  # String ids and one block per dtype (float64, float32, int64), in the frame's own column order.
  frame = pd.DataFrame(
    {
      "b1": values[:, 0],
      "a2": values[:, 1].astype(np.float32),
      "c3": np.round(values[:, 2]).astype(np.int64),
    },
    index=index,
  )
  frame.to_hdf(tmp_path / "s.h5", key="speed")
  ds = read_series(tmp_path / "s.h5")
  assert ds.node_ids == ("b1", "a2", "c3")
  np.testing.assert_allclose(ds.values[..., 0], frame.to_numpy(np.float64), rtol=1e-6)


def test_dcrnn_h5_pandas_time_zones_and_table_format(tmp_path, rng):
  pd = pytest.importorskip("pandas")
  pytest.importorskip("tables")
  index = pd.date_range("2017-01-01", periods=40, freq="5min", unit="us")
  frame = pd.DataFrame(rng.normal(size=(40, 3)), index=index, columns=[400001, 400017, 400030])
  for zone in ("UTC", datetime.timezone.utc, datetime.timezone(datetime.timedelta(hours=8))):  # fixed offsets
    frame.tz_localize(zone).to_hdf(tmp_path / "fixed.h5", key="df")
    np.testing.assert_array_equal(
      read_series(tmp_path / "fixed.h5").timestamps, index.values.astype("datetime64[s]")
    )
  frame.tz_localize("America/Los_Angeles").to_hdf(tmp_path / "la.h5", key="df")
  with pytest.raises(UserError) as e:
    read_series(tmp_path / "la.h5")
  assert_one_line(e, "la.h5: the frame index is in time zone 'America/Los_Angeles'", "tz_localize(None)")
  frame.to_hdf(tmp_path / "table.h5", key="df", format="table")
  with pytest.raises(UserError) as e:
    read_series(tmp_path / "table.h5")
  assert_one_line(e, "table.h5: frame 'df' was written with format='table'", "format='fixed'")
  with warnings.catch_warnings():  # PyTables pickles these, and says so
    warnings.simplefilter("ignore")
    frame.assign(note="x").to_hdf(tmp_path / "mixed.h5", key="df")  # int and str labels
    frame.set_axis(["a", "b", "c"], axis=1).assign(note="x").to_hdf(tmp_path / "text.h5", key="df")
  for name, node in (("mixed.h5", "axis0"), ("text.h5", "block1_values")):
    with pytest.raises(UserError) as e:
      read_series(tmp_path / name)
    assert_one_line(e, f"{name}: {node} holds pickled Python objects")
  frame.reset_index(drop=True).to_hdf(tmp_path / "range.h5", key="df")
  with pytest.raises(UserError) as e:
    read_series(tmp_path / "range.h5")
  assert_one_line(e, "range.h5: the frame index is not a datetime index (kind='integer'")


def test_stssl_npz(tmp_path, rng):
  t, n, steps_per_day = 100, 5, 48
  flow = rng.integers(0, 50, (t, n, 2)).astype(np.float64)
  tod = np.round((np.arange(t) % steps_per_day) / steps_per_day, 5)
  data = np.concatenate([flow, np.broadcast_to(tod[:, None, None], (t, n, 1))], axis=-1)
  np.savez(tmp_path / "Grid.npz", data=data)
  ds = read_series(tmp_path / "Grid.npz", step_minutes=30, start="2016-07-01")
  assert ds.channels == ("inflow", "outflow") and ds.values.shape == (t, n, 2)
  np.testing.assert_array_equal(ds.values, flow)
  assert ds.day_of_week[0] == 4 and ds.day_of_week[48] == 5  # 2016-07-01 was a Friday
  with pytest.raises(UserError, match="time-of-day channel 2"):  # the wrong step is caught
    read_series(tmp_path / "Grid.npz", step_minutes=60, start="2016-07-01")
  with pytest.raises(UserError, match="no dates; pass step_minutes= and start="):
    read_series(tmp_path / "Grid.npz")
  np.savez(tmp_path / "Bad.npz", data=flow[:, :, 0])
  with pytest.raises(UserError, match=r"Bad\.npz: 'data' must be \[time, nodes, channels\]"):
    read_series(tmp_path / "Bad.npz", step_minutes=30, start="2016-07-01")
  np.savez(tmp_path / "Nokey.npz", values=data)
  with pytest.raises(UserError, match=r"Nokey\.npz: missing array\(s\) data"):
    read_series(tmp_path / "Nokey.npz", step_minutes=30, start="2016-07-01")


def _stllm_windows(series, tod, dow, start, count, t_in=12, t_out=12):
  idx = start + np.arange(count)[:, None] + np.arange(t_in)[None]
  x = np.stack(
    [
      series[idx],
      np.broadcast_to(tod[idx][..., None], series[idx].shape),
      np.broadcast_to(dow[idx][..., None], series[idx].shape),
    ],
    axis=-1,
  )
  y = series[start + np.arange(count)[:, None] + t_in + np.arange(t_out)[None]][..., None]
  return x, np.concatenate([y, y], axis=-1)  # y may carry more than one channel


def test_stllm_folder(tmp_path, rng):
  t_in = t_out = 12
  counts = (30, 10, 10)
  total = sum(counts) + t_in + t_out - 1
  series = rng.poisson(5.0, (total, 4)).astype(np.float64)
  series[7, 1] = np.nan  # loaded as is
  start_pos = 40  # 20:00 on a Sunday
  tod = ((start_pos + np.arange(total)) % 48) / 48
  dow = (6 + (start_pos + np.arange(total)) // 48) % 7
  begin = 0
  for split, count in zip(("train", "val", "test"), counts):
    x, y = _stllm_windows(series, tod, dow, begin, count)
    np.savez(tmp_path / f"{split}.npz", x=x, y=y)
    begin += count
  ds = read_series(tmp_path)
  assert ds.values.shape == (total, 4, 1) and ds.step_minutes == 30
  np.testing.assert_array_equal(ds.values[..., 0], series.astype(np.float32))
  np.testing.assert_allclose(ds.time_of_day, tod, atol=1e-6)
  np.testing.assert_array_equal(ds.day_of_week, dow)
  assert ds.name == tmp_path.name
  # val whose windows skip one step after train's last window -> named error.
  x, y = _stllm_windows(series, tod, dow, counts[0] + 1, counts[1] - 1)
  np.savez(tmp_path / "val.npz", x=x, y=y)
  with pytest.raises(UserError, match=r"val\.npz: its first windows do not continue"):
    read_series(tmp_path)
  # Windows within a file that are not stride-1.
  x, y = _stllm_windows(series, tod, dow, 0, counts[0])
  np.savez(tmp_path / "train.npz", x=x[::2], y=y[::2])
  with pytest.raises(UserError, match=r"train\.npz: windows are not consecutive"):
    read_series(tmp_path)
  np.savez(tmp_path / "train.npz", x=x[..., :2], y=y)
  with pytest.raises(UserError, match=r"train\.npz: 'x' must be"):
    read_series(tmp_path)


def test_node_csv_with_and_without_date(tmp_path, rng):
  values = rng.uniform(0, 10, (30, 3))
  dates = np.datetime64("2023-01-01T00:00") + np.arange(30) * np.timedelta64(60, "m")
  lines = ["date,n0,n1,n2"] + [
    f"{str(d).replace('T', ' ')}:00," + ",".join(f"{v:.6f}" for v in row) for d, row in zip(dates, values)
  ]
  lines[5] = lines[5].rsplit(",", 1)[0] + ","  # one empty reading -> NaN
  (tmp_path / "inflow.csv").write_text("\n".join(lines) + "\n")
  ds = read_series(tmp_path / "inflow.csv")
  assert ds.values.shape == (30, 3, 1) and ds.node_ids == ("n0", "n1", "n2") and ds.step_minutes == 60
  assert np.isnan(ds.values[4, 2, 0]) and np.isnan(ds.values).sum() == 1
  np.testing.assert_allclose(
    np.nan_to_num(ds.values[..., 0]), np.where(np.isnan(ds.values[..., 0]), 0, values), atol=1e-6
  )
  tod, dow = calendar_features(dates)
  np.testing.assert_allclose(ds.time_of_day, tod)
  np.testing.assert_array_equal(ds.day_of_week, dow)
  (tmp_path / "speed.csv").write_text("717,718\n" + "\n".join(f"{a},{b}" for a, b in values[:, :2]) + "\n")
  ds = read_series(tmp_path / "speed.csv", step_minutes=5, start="2012-03-01")
  assert ds.node_ids == ("717", "718") and ds.values.shape == (30, 2, 1)
  assert ds.timestamps[-1] == np.datetime64("2012-03-01T02:25")
  with pytest.raises(UserError, match=r"speed\.csv: the file has no dates"):
    read_series(tmp_path / "speed.csv")
  (tmp_path / "typo.csv").write_text("a,b\n1,2\n3,x\n")
  with pytest.raises(UserError, match=r"typo\.csv: row 3, column 2: 'x' is not a number"):
    read_series(tmp_path / "typo.csv", step_minutes=5, start="2012-03-01")
  lines[8], lines[9] = lines[9], lines[8]
  (tmp_path / "shuffled.csv").write_text("\n".join(lines) + "\n")
  with pytest.raises(UserError, match="not strictly increasing"):
    read_series(tmp_path / "shuffled.csv")


def _gaussian_reference(edges, n, threshold=0.1):
  """float64 reference of DCRNN's rule."""
  dist = np.full((n, n), np.inf)
  for i, j, d in edges:
    dist[i, j] = d
  sigma = dist[np.isfinite(dist)].std()
  w = np.exp(-((dist / sigma) ** 2))
  return np.where(w < threshold, 0.0, w)


def test_gaussian_kernel_matches_reference(rng):
  n = 12
  pairs = {(int(a), int(b)) for a, b in rng.integers(0, n, (40, 2))}
  edges = [(a, b, float(rng.uniform(0, 5))) for a, b in sorted(pairs)]
  src, dst, dist = map(np.array, zip(*edges))
  got = gaussian_kernel_adjacency(src, dst, dist, n)
  ref = _gaussian_reference(edges, n)
  np.testing.assert_allclose(got, ref, atol=1e-5)
  assert (
    got.dtype == np.float32 and ((got != 0) == (ref != 0)).all() and (ref == 0).sum() > n * n - len(edges)
  )


def test_edge_csv_ids_header_and_node_order_file(tmp_path, rng):
  ids = ["317842", "318711", "315955", "313344"]
  edges = [(0, 1, 0.8), (1, 2, 1.3), (2, 3, 0.4), (3, 0, 2.0), (0, 2, 0.9)]
  ref = _gaussian_reference(edges, 4)
  body = "\n".join(f"{ids[a]},{ids[b]},{d}" for a, b, d in edges)
  (tmp_path / "G.csv").write_text("from,to,distance\n" + body + "\n")
  with pytest.raises(UserError, match=r"G\.csv: node ids do not look like 0\.\.N-1"):
    read_graph(tmp_path / "G.csv")
  np.testing.assert_allclose(read_graph(tmp_path / "G.csv", node_ids=ids), ref, atol=1e-6)
  (tmp_path / "G.txt").write_text("\n".join(ids) + "\n")  # PEMS03.txt-style node order beside it
  np.testing.assert_allclose(read_graph(tmp_path / "G.csv"), ref, atol=1e-6)
  (tmp_path / "plain.csv").write_text("\n".join(f"{a},{b},{d}" for a, b, d in edges) + "\n")  # no header
  assert kind_of(tmp_path / "plain.csv") == "graph"
  np.testing.assert_allclose(read_graph(tmp_path / "plain.csv", num_nodes=4), ref, atol=1e-6)
  with pytest.raises(UserError, match=r"plain\.csv: 'from' node index 3 outside 0\.\.2"):
    read_graph(tmp_path / "plain.csv", num_nodes=3)


def test_matrix_csv_with_and_without_header(tmp_path, rng):
  adj = np.round(rng.uniform(0, 1, (5, 5)) * (rng.uniform(size=(5, 5)) < 0.5), 6)
  rows = "\n".join(",".join(f"{v:g}" for v in r) for r in adj) + "\n"
  (tmp_path / "X_adj.csv").write_text(",".join(map(str, range(5))) + "\n" + rows)
  (tmp_path / "bare.csv").write_text(rows)
  for name in ("X_adj.csv", "bare.csv"):
    assert kind_of(tmp_path / name) == "graph"
    np.testing.assert_allclose(read_graph(tmp_path / name), adj, atol=1e-6)
  with pytest.raises(UserError, match=r"X_adj\.csv: adjacency is 5 x 5 but the series has 6 nodes"):
    read_graph(tmp_path / "X_adj.csv", num_nodes=6)


def test_adj_pkl_roundtrip_and_reorder(tmp_path, rng):
  ids = ["773869", "767541", "767542"]
  adj = rng.uniform(size=(3, 3)).astype(np.float32)
  with open(tmp_path / "adj_mx.pkl", "wb") as f:
    pickle.dump([ids, {s: i for i, s in enumerate(ids)}, adj], f, protocol=2)
  got_ids, got = read_adj_pkl(tmp_path / "adj_mx.pkl")
  assert got_ids == tuple(ids)
  np.testing.assert_array_equal(got, adj)
  order = [ids[2], ids[0], ids[1]]
  np.testing.assert_array_equal(
    read_graph(tmp_path / "adj_mx.pkl", node_ids=order), adj[np.ix_([2, 0, 1], [2, 0, 1])]
  )
  with pytest.raises(UserError, match=r"adj_mx\.pkl: its 3 node ids do not hold the 3 given"):
    read_graph(tmp_path / "adj_mx.pkl", node_ids=["1", "2", "3"])
  # A series of some of the graph's sensors gets the graph restricted to them, in its order.
  np.testing.assert_array_equal(
    read_graph(tmp_path / "adj_mx.pkl", node_ids=[ids[2], ids[0]]), adj[np.ix_([2, 0], [2, 0])]
  )
  with pytest.raises(UserError, match="do not hold the 2 given"):
    read_graph(tmp_path / "adj_mx.pkl", node_ids=[ids[0], ids[0]])
  with open(tmp_path / "short.pkl", "wb") as f:
    pickle.dump([ids, {}, adj[:2]], f, protocol=0)
  with pytest.raises(UserError, match=r"short\.pkl: adj_mx has shape \(2, 3\) but there are 3 sensor ids"):
    read_graph(tmp_path / "short.pkl")


class _Exploit:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


class _Opener:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("payload", [_Exploit, _Opener])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_crafted_pickle_is_refused_not_executed(tmp_path, payload, protocol):
  marker = tmp_path / "pwned"
  # The payload sits inside an otherwise valid graph pickle, after the arrays.
  obj = [["1"], {"1": 0}, np.eye(1, dtype=np.float32), payload(marker)]
  (tmp_path / "adj_mx.pkl").write_bytes(pickle.dumps(obj, protocol=protocol))
  with pytest.raises(
    UserError, match=r"adj_mx\.pkl: refused to unpickle '(posix|nt|os|builtins|io)\.(system|open)'"
  ):
    read_graph(tmp_path / "adj_mx.pkl")
  assert not marker.exists()


def test_unknown_missing_and_not_a_pickle(tmp_path):
  with pytest.raises(UserError, match=r"nope\.h5: file not found"):
    read_series(tmp_path / "nope.h5")
  (tmp_path / "a.parquet").write_text("x")
  with pytest.raises(UserError, match=r"a\.parquet: unknown series format '\.parquet'"):
    read_series(tmp_path / "a.parquet")
  with pytest.raises(UserError, match=r"a\.parquet: unknown graph format"):
    read_graph(tmp_path / "a.parquet")
  (tmp_path / "g.pkl").write_bytes(b"\x80\x04garbage")
  with pytest.raises(UserError, match=r"g\.pkl: not a readable pickle"):
    read_graph(tmp_path / "g.pkl")
  (tmp_path / "z.npz").write_bytes(b"PK\x03\x04broken")
  with pytest.raises(UserError, match=r"z\.npz: not a readable \.npz"):
    read_graph(tmp_path / "z.npz")


# ---- real files (STJAX_SHARED_DATA), skipped when absent ------------------------------------------------


def test_real_dcrnn_graphs(shared_data):
  ids, adj = read_adj_pkl(shared_data / "METR-LA/adj_mx.pkl")
  assert len(ids) == 207 and ids[0] == "773869" and adj.shape == (207, 207) and (adj != 0).sum() == 1722
  assert ids == tuple((shared_data / "METR-LA/graph_sensor_ids.txt").read_text().strip().split(","))
  bay_ids, bay = read_adj_pkl(shared_data / "PEMS-BAY/adj_mx_bay.pkl")
  assert len(bay_ids) == 325 and bay_ids[0] == "400001" and (bay != 0).sum() == 2694
  # DCRNN's own rule, applied by stjax to the distance list, gives back the released graph.
  rebuilt = read_graph(shared_data / "PEMS-BAY/distances_bay_2017.csv", node_ids=bay_ids)
  assert (rebuilt != 0).sum() == 2694
  assert np.abs(rebuilt - bay).max() < 1e-6
  np.testing.assert_array_equal(
    read_graph(shared_data / "STH-SepNet_graphs/METR/METR_adj.csv") != 0, adj != 0
  )


def test_real_nycbike(shared_data):
  raw = np.load(shared_data / "NYC_ST-SSL/NYCBike1/NYCBike1.npz")["data"]
  assert raw.shape == (4392, 128, 3)
  ds = read_series(shared_data / "NYC_ST-SSL/NYCBike1/NYCBike1.npz", step_minutes=60, start="2014-04-01")
  assert ds.values.shape == (4392, 128, 2) and ds.channels == ("inflow", "outflow")
  np.testing.assert_array_equal(ds.values, raw[..., :2].astype(np.float32))
  ds2 = read_series(shared_data / "NYC_ST-SSL/NYCBike2/NYCBike2.npz", step_minutes=30, start="2016-07-01")
  assert ds2.values.shape == (2880, 200, 2) and ds2.values.max() == 307
  for name, n in (("NYCBike1", 128), ("NYCBike2", 200)):
    adj = read_graph(shared_data / f"NYC_ST-SSL/{name}/adj_mx.npz", num_nodes=n)
    assert adj.shape == (n, n) and np.array_equal(adj, adj.T) and set(np.unique(adj)) <= {0.0, 1.0}


def test_real_los_speed(shared_data):
  ds = read_series(shared_data / "METR-LA/tgcn_los_subset/los_speed.csv", step_minutes=5, start="2012-03-01")
  ids, _ = read_adj_pkl(shared_data / "METR-LA/adj_mx.pkl")
  assert ds.values.shape == (2016, 207, 1) and ds.node_ids == ids
  np.testing.assert_allclose(ds.values[0, :4, 0], [64.375, 67.625, 67.125, 61.5])
  assert ds.values.min() == 1.0 and ds.values.max() == 70.0
  los_adj = read_graph(shared_data / "METR-LA/tgcn_los_subset/los_adj.csv", num_nodes=207)
  assert (los_adj != 0).sum() == 2833 and np.array_equal(los_adj, los_adj.T)


def test_real_sthsepnet_and_pems_graphs(shared_data):
  pems03 = read_graph(shared_data / "STH-SepNet_graphs/PEMS03/PEMS03_adj.csv")
  assert pems03.shape == (358, 358) and np.array_equal(pems03, pems03.T) and (pems03 != 0).sum() == 1092
  assert read_graph(shared_data / "STH-SepNet_graphs/BJ/BJ_adj.csv").shape == (500, 500)
  bike_counts = read_graph(shared_data / "STH-SepNet_graphs/Bike/adj.csv")
  assert bike_counts.shape == (295, 295) and (bike_counts != 0).sum() == 17830
  assert read_graph(shared_data / "STH-SepNet_graphs/Bike/Bike.csv").shape == (295, 295)
  # ASTGCN distance lists: (file, nodes, edges); PEMS03 maps station ids through PEMS03.txt beside it.
  for name, nodes, edges in (
    ("PEMS03", 358, 547),
    ("PEMS04", 307, 340),
    ("PEMS07", 883, 866),
    ("PEMS08", 170, 295),
  ):
    path = shared_data / f"PEMS0X/{name}/{name}.csv"
    rows = [line.split(",") for line in path.read_text().splitlines()[1:] if line.strip()]
    assert len(rows) == edges and len({r[0] for r in rows} | {r[1] for r in rows}) == nodes
    adj = read_graph(path, num_nodes=nodes)
    assert adj.shape == (nodes, nodes) and 0 < (adj != 0).sum() <= edges
  assert read_graph(shared_data / "PEMS0X/PEMS08/PEMS08.csv").shape == (170, 170)  # ids 0..169
