"""Real full-length series of some sensors / the last 40 % of the span, rebuilt exactly from public
DCRNN-style windowed splits (every window re-checked); derived files, so no URL (docs/data_formats.md)."""

from __future__ import annotations

from stjax.data.catalog import sources
from stjax.data.catalog.entries import DatasetInfo, RemoteFile
from stjax.data.catalog.sensors import metr_graph

REAL_SUBSETS = [
  DatasetInfo(
    "metr-la-29",
    "METR-LA speed, all 34272 steps (5 min from 2012-03-01) of 29 of the 207 sensors; 0 = missing",
    29,
    34272,
    5,
    "dcrnn",
    "metr_la_29_sensors.npz",
    "adj_mx.pkl",
    (
      RemoteFile(
        "metr_la_29_sensors.npz",
        None,
        "a21047963c78dedb134470ded6be7fae34dac363b4cb08230a0303117b8e69e5",
        1489025,
        "real_subsets/metr_la_29_sensors.npz",
        note=sources.SUBSET_NOTE,
      ),
      metr_graph(),
    ),
    {"step_minutes": 5, "start": "2012-03-01T00:00", "channels": ("speed",), "node_ids_key": "sensor_ids"},
  ),
  DatasetInfo(
    "pems08-tail",
    "PEMS08 flow, the last 40 % (7156 steps, 5 min from 2016-08-07 03:40), all 170 detectors",
    170,
    7156,
    5,
    "pems",
    "pems08_last_40pct.npz",
    "PEMS08.csv",
    (
      RemoteFile(
        "pems08_last_40pct.npz",
        None,
        "d247d8c04493271fbbfa26685bec11ec304557842d96f6d771570cab5f1c0f64",
        1901378,
        "real_subsets/pems08_last_40pct.npz",
        note=sources.SUBSET_NOTE,
      ),
      RemoteFile(
        "PEMS08.csv",
        f"{sources.ASTGNN}/PEMS08/PEMS08.csv",
        "859d68e7583ed4e6016588eaaca494d3ece286dae361614c5c1833017f87eaa7",
        4032,
        "PEMS0X/PEMS08/PEMS08.csv",
      ),
    ),
    {"step_minutes": 5, "start": "2016-08-07T03:40", "channels": ("flow",)},
    counts=True,
  ),
  DatasetInfo(
    "bike-drop-tail",
    "NYC Citi Bike drop-offs (ST-LLM's 250 stations), the last 1762 half-hour steps from 2016-05-25 07:00",
    250,
    1762,
    30,
    "stllm",
    "nyc_bike_drop_last_40pct.npz",
    "nyc_bike_drop_last_40pct.npz",
    (
      RemoteFile(
        "nyc_bike_drop_last_40pct.npz",
        None,
        "9ec53b9dc6557aaca95b43a041c9716c82d6805bd959fd56d3f4c95dccabe568",
        375942,
        "real_subsets/nyc_bike_drop_last_40pct.npz",
        note=sources.SUBSET_NOTE,
      ),
    ),
    {"step_minutes": 30, "start": "2016-05-25T07:00", "channels": ("drop-offs",)},
    counts=True,
  ),
]
