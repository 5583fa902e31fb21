"""The DCRNN loop-detector speed sets: METR-LA, PEMS-BAY and the T-GCN METR-LA excerpt; and the
METR-LA graph file they (and `real_subsets`) share."""

from __future__ import annotations

from stjax.data.catalog import sources
from stjax.data.catalog.entries import DatasetInfo, RemoteFile


def metr_graph() -> RemoteFile:
  """DCRNN's METR-LA adjacency (adj_mx.pkl)."""
  return RemoteFile(
    "adj_mx.pkl",
    f"{sources.DCRNN}/adj_mx.pkl",
    "a35687c6e15aa228dc45027b0ed2a0ea0f4ec78f573deb992c595092d12f61b3",
    680459,
    "METR-LA/adj_mx.pkl",
  )


SENSORS = [
  DatasetInfo(
    "metr-la",
    "DCRNN METR-LA loop-detector speed, Los Angeles, 2012-03-01..06-27",
    207,
    34272,
    5,
    "dcrnn",
    "metr-la.h5",
    "adj_mx.pkl",
    (RemoteFile("metr-la.h5", f"{sources.ZENODO_DCRNN}/metr-la.h5"), metr_graph()),
  ),
  DatasetInfo(
    "pems-bay",
    "DCRNN PEMS-BAY speed, Bay Area, 2017-01-01..06-30",
    325,
    52116,
    5,
    "dcrnn",
    "pems-bay.h5",
    "adj_mx_bay.pkl",
    (
      RemoteFile("pems-bay.h5", f"{sources.ZENODO_DCRNN}/pems-bay.h5"),
      RemoteFile(
        "adj_mx_bay.pkl",
        f"{sources.DCRNN}/adj_mx_bay.pkl",
        "116275f5704d0d492018e14c047f7ae5004385b450aa907f88424055a4a97370",
        1681480,
        "PEMS-BAY/adj_mx_bay.pkl",
      ),
      RemoteFile(
        "distances_bay_2017.csv",
        f"{sources.DCRNN}/distances_bay_2017.csv",
        "e5feed06bfa1ba4c554a946d0e03d99f2018365eec5a8f28fd8504dea9d082b5",
        175771,
        "PEMS-BAY/distances_bay_2017.csv",
      ),
    ),
  ),
  DatasetInfo(
    "metr-la-excerpt",
    "first 7 days of METR-LA as T-GCN ships it (zeros interpolated), for smoke tests",
    207,
    2016,
    5,
    "dcrnn",
    "los_speed.csv",
    "adj_mx.pkl",
    (
      RemoteFile(
        "los_speed.csv",
        f"{sources.TGCN}/los_speed.csv",
        "7b732d86ae32b2930595becba28aff39dacbfb2197e250fc0332e1744ce2cbf4",
        3402125,
        "METR-LA/tgcn_los_subset/los_speed.csv",
      ),
      metr_graph(),
    ),
    {"step_minutes": 5, "start": "2012-03-01T00:00", "channel": "speed"},
  ),
]
