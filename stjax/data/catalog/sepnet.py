"""STH-SepNet's series: PEMS03, METR, BJ500 and the NYC Citi Bike in/outflow (their graphs pinned)."""

from __future__ import annotations

from stjax.data.catalog import sources
from stjax.data.catalog.entries import DatasetInfo, RemoteFile


def _sepnet(name, folder, series, nodes, steps, step, adj, sha, size, start_note, counts=False):
  return DatasetInfo(
    name,
    f"STH-SepNet {folder} ({start_note})",
    nodes,
    steps,
    step,
    "sthsepnet",
    series,
    adj,
    (
      RemoteFile(series, None, note=sources.SEPNET_NOTE),
      RemoteFile(adj, f"{sources.SEPNET}/{folder}/{adj}", sha, size, f"STH-SepNet_graphs/{folder}/{adj}"),
    ),
    counts=counts,
  )


SEPNET = [
  _sepnet(
    "sthsepnet-pems03",
    "PEMS03",
    "PEMS03.csv",
    358,
    26208,
    5,
    "PEMS03_adj.csv",
    "b6a79997d5c58e3c60b84084b90af95d720ab696e3a4473a002f1afd1636a759",
    516407,
    "5 min",
    counts=True,
  ),
  _sepnet(
    "sthsepnet-metr",
    "METR",
    "METR.csv",
    207,
    34272,
    5,
    "METR_adj.csv",
    "b70609e5d5e8d32fb285ce01e6eb2167b376f0bbcacaaccf04000809614ca9df",
    179753,
    "METR-LA, 5 min",
  ),
  _sepnet(
    "sthsepnet-bj500",
    "BJ",
    "BJ.csv",
    500,
    None,
    5,
    "BJ_adj.csv",
    "04c19c5d422c5666ae67cf1e06cbb65c5e4770df5fb426d24886ff102d7b361a",
    1729271,
    "Beijing, 5 min",
  ),
  *(
    _sepnet(
      f"sthsepnet-bike-{flow}",
      "Bike",
      f"{flow}.csv",
      295,
      8760,
      60,
      "adj.csv",
      "24263a657a5b738c8e0f75cbdb3d4ca79a7a01af9bfb2d21315b0e444d526982",
      358126,
      f"NYC Citi Bike {flow}, hourly 2023",
      counts=True,
    )
    for flow in ("inflow", "outflow")
  ),
]
