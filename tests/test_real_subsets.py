"""The three real full-length series of the registry (metr-la-29, pems08-tail, bike-drop-tail):
they load by name, their calendars check out, the METR-LA graph is DCRNN's restricted to the 29
sensors, their protocols cut the expected windows; reader options work from the command line;
count data are clipped at 0 by default."""

import numpy as np
import pytest

from stjax.data import registry
from stjax.data.formats import read_graph
from stjax.data.windows import build_data, default_data_config, reader_options
from stjax.errors import UserError


def _config(name, **fields):
  c = default_data_config()
  c.name = name
  c.update(fields)
  return c


def test_metr_la_29_graph_is_dcrnn_restricted(shared_data):
  d = registry.load("metr-la-29")
  raw = np.load(shared_data / "real_subsets" / "metr_la_29_sensors.npz")
  assert d.values.shape == (34272, 29, 1) and d.timestamps[0] == np.datetime64("2012-03-01T00:00")
  np.testing.assert_array_equal(d.values, raw["data"])
  full = read_graph(shared_data / "METR-LA" / "adj_mx.pkl")  # 207 sensors in DCRNN's column order
  cols = raw["dcrnn_column"]
  np.testing.assert_array_equal(d.adjacency, full[np.ix_(cols, cols)])
  assert 0.07 < float(np.mean(d.values == 0)) < 0.085  # 7.7 % missing, as published


def test_subsets_windows_and_counts(shared_data):
  expected = {  # name: (protocol, steps, nodes, windows per split from the protocol's rule)
    "metr-la-29": ("dcrnn", 34272, 29, (23974, 3425, 6850)),
    "pems08-tail": ("pems", 7156, 170, (4280, 1426, 1427)),  # 7133 windows: 60 % train, 20 % test, rest val
    "bike-drop-tail": ("stllm", 1762, 250, (1043, 348, 348)),
  }
  for name, (protocol, steps, nodes, windows) in expected.items():
    bundle = build_data(_config(name))
    assert bundle.protocol.name == protocol and bundle.dataset.values.shape[:2] == (steps, nodes)
    assert tuple(len(bundle.splits[s]) for s in ("train", "val", "test")) == windows, name
    assert bundle.nonnegative == registry.get(name).counts == (name != "metr-la-29")
    assert bundle.spec.adjacency.shape == (nodes, nodes)


def test_bike_calendar_checked_against_the_files_time_of_day(shared_data, tmp_path):
  src = shared_data / "real_subsets" / "nyc_bike_drop_last_40pct.npz"
  d = registry.load("bike-drop-tail")
  np.testing.assert_allclose(d.time_of_day, np.load(src)["time_of_day"], atol=1e-6)
  c = _config("bike-drop-tail", path=str(src))
  c.reader.step_minutes, c.reader.channels = 30, ("drop-offs",)
  c.reader.start = "2016-05-25T07:00"
  assert build_data(c).dataset.values.shape == (1762, 250, 1)
  c.reader.start = "2016-05-25T07:30"  # half an hour off: the stored time of day disagrees
  with pytest.raises(
    UserError, match="array 'time_of_day'.*reads 0.29167 at step 0, but the calendar gives 0.31250"
  ):
    build_data(c)


def test_reader_options_from_the_command_line(shared_data):
  """A file given by path with the reader options the registry would give (what a user's own data
  needs), as `--config.data.path=... --config.data.reader.*=...` sets them."""
  c = _config("mine", path=str(shared_data / "real_subsets" / "pems08_last_40pct.npz"), protocol="pems")
  c.reader.step_minutes, c.reader.start, c.reader.channels = 5, "2016-08-07T03:40", ("flow",)
  bundle = build_data(c)
  assert bundle.dataset.values.shape == (7156, 170, 1) and not bundle.nonnegative  # not a registry name
  c.nonnegative = "yes"
  assert build_data(c).nonnegative
  assert reader_options(c) == {
    "name": "mine",
    "step_minutes": 5,
    "start": "2016-08-07T03:40",
    "channels": ("flow",),
  }
  c.reader.tod_channel = "x"
  with pytest.raises(UserError, match="config.data.reader.tod_channel"):
    build_data(c)
